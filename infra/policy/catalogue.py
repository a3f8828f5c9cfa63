"""The policy catalogue as documentation: the rule tables in infra/policy/README.md and the rule
counts in README.md, written from the rules themselves.

``python -m infra.policy.catalogue`` rewrites both files; ``--check`` writes nothing and exits 1
when either is out of date (tests/infra/policy/test_catalogue.py runs the check). Each table sits
between a begin and an end marker; the counts are the numbers before "security and compliance
rules" and "deploy-readiness rules".
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.errors import EXIT_ERROR, EXIT_OK, REPO_ROOT, InfraError, display_path
from infra.markdown import table
from infra.policy.readiness import READINESS
from infra.policy.rules import RULES, Rule

POLICY_README = REPO_ROOT / "infra" / "policy" / "README.md"
README = REPO_ROOT / "README.md"
COMMAND = "python -m infra.policy.catalogue"


def security_rules() -> list[Rule]:
    """The security and compliance rules: the catalogue without the deploy-readiness family."""
    readiness = {rule.name for rule in READINESS}
    return [rule for rule in RULES if rule.name not in readiness]


def security_table(rules: Sequence[Rule]) -> list[str]:
    return table(
        ["Rule", "Cloud", "Default", "Corresponds to", "Checks"],
        [
            [
                f"`{r.name}`",
                ", ".join(r.clouds),
                r.enforcement.value,
                ", ".join(r.controls),
                r.description,
            ]
            for r in rules
        ],
    )


def readiness_table(rules: Sequence[Rule]) -> list[str]:
    return table(
        ["Rule", "Cloud", "Reflects", "Checks"],
        [[f"`{r.name}`", ", ".join(r.clouds), ", ".join(r.controls), r.description] for r in rules],
    )


@dataclass(frozen=True)
class Section:
    """A generated block of a markdown file, between its two marker lines."""

    name: str
    lines: list[str]

    @property
    def begin(self) -> str:
        return f"<!-- {self.name}: begin (written by `{COMMAND}`; edit the rules, not this) -->"

    @property
    def end(self) -> str:
        return f"<!-- {self.name}: end -->"

    def replace_in(self, text: str, file: Path) -> str:
        """``text`` with this section's lines between its markers (each present exactly once)."""
        lines = text.split("\n")
        for marker in (self.begin, self.end):
            if lines.count(marker) != 1:
                found = "missing" if marker not in lines else "there more than once"
                raise InfraError(file, self.name, f"the marker line {marker!r} is {found}")
        first, last = lines.index(self.begin), lines.index(self.end)
        if last < first:
            raise InfraError(file, self.name, "the end marker comes before the begin marker")
        return "\n".join([*lines[: first + 1], *self.lines, *lines[last:]])


def policy_readme(text: str, security: Sequence[Rule], readiness: Sequence[Rule]) -> str:
    """infra/policy/README.md with both rule tables written from ``security`` and ``readiness``."""
    text = Section("security rules", security_table(security)).replace_in(text, POLICY_README)
    return Section("deploy-readiness rules", readiness_table(readiness)).replace_in(
        text, POLICY_README
    )


COUNTS = {
    "security and compliance rules": re.compile(r"\b\d+( security and compliance rules)\b"),
    "deploy-readiness rules": re.compile(r"\b\d+( deploy-readiness rules)\b"),
}


def readme(text: str, security: int, readiness: int) -> str:
    """README.md with the number of security and of deploy-readiness rules written in."""
    for (name, pattern), count in zip(COUNTS.items(), (security, readiness), strict=True):
        text, found = pattern.subn(rf"{count}\1", text)
        if found != 1:
            message = f"expected one '<number> {name}' in the text, found {found}"
            raise InfraError(README, name, message)
    return text


def written() -> dict[Path, str]:
    """Each generated file with its content as the rules make it today."""
    security = security_rules()
    policy = POLICY_README.read_text(encoding="utf-8")
    top = README.read_text(encoding="utf-8")
    return {
        POLICY_README: policy_readme(policy, security, READINESS),
        README: readme(top, len(security), len(READINESS)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is out of date"
    )
    args = parser.parse_args(argv)
    try:
        files = written()  # every file is rendered before any is written
    except InfraError as error:
        print(error, file=sys.stderr)
        return EXIT_ERROR
    stale = [p for p, text in files.items() if p.read_text(encoding="utf-8") != text]
    for path in stale:
        shown = display_path(path)
        if args.check:
            print(f"{shown} is out of date: run `{COMMAND}`", file=sys.stderr)
        else:
            path.write_text(files[path], encoding="utf-8")
            print(f"wrote {shown}")
    return EXIT_ERROR if args.check and stale else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
