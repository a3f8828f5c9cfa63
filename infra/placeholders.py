"""Example values that must never reach a live run.

The shipped environments keep example values (accounts ``111111111111``, ``example.com``
domains, ``example-*`` projects and buckets, ``example-org`` images and repository, zeroed
digests and certificate ids) so that the offline preview works on a fresh clone. Every live
command (`preview` with the CLI, `up`, `drift`) calls :func:`refuse_examples` before it runs
the Pulumi CLI; `nox -s init` writes an organisation's real values.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.settings import (
    DEFAULTS_FILE,
    ENVIRONMENTS_DIR,
    PINS_FILE,
    SETTINGS_FILE,
    Cloud,
    SettingsError,
)

# (what it is, pattern over one string value)
EXAMPLES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("an example account id", re.compile(r"(?<!\d)(\d)\1{11}(?!\d)|(?<!\d)123456789012(?!\d)")),
    ("an example domain", re.compile(r"(^|[.@/])example\.(com|org|net)\b|\.example\b")),
    ("an example organisation", re.compile(r"\bexample-org\b")),
    ("an example project or bucket", re.compile(r"(^|[/:@.])example-[a-z0-9-]+")),
    ("an example hosted zone", re.compile(r"^Z0*EXAMPLE")),
    ("a zeroed digest", re.compile(r"sha256:0{60}")),
    ("a zeroed certificate id", re.compile(r"00000000-0000-0000-0000-")),
)
# Sections that hold no deployable value (policy exemptions, freezes) are not searched.
SKIPPED = frozenset({"policy", "freeze", "freeze_weekly"})


@dataclass(frozen=True)
class Example:
    file: Path
    key: str
    value: str
    kind: str

    def error(self) -> SettingsError:
        return SettingsError(
            self.file,
            self.key,
            f"'{self.value}' is {self.kind}; write your organisation's values with "
            "`nox -s init` (nothing was run)",
        )


def _strings(node: Any, prefix: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{prefix}[{index}]")
    elif isinstance(node, str):
        yield prefix, node


def _load(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def find_examples(
    environment: str, clouds: Sequence[Cloud] = tuple(Cloud), root: Path = ENVIRONMENTS_DIR
) -> list[Example]:
    """Every example value the environment would deploy with, in the file that sets it."""
    files = [
        root / DEFAULTS_FILE,
        root / environment / SETTINGS_FILE,
        root / environment / PINS_FILE,
    ]
    skipped = set(SKIPPED) | {c.value for c in Cloud if c not in clouds}
    values: dict[str, tuple[Path, str]] = {}
    for path in files:
        for key, value in _strings(_load(path), ""):
            head = key.split(".", 1)[0].split("[", 1)[0]
            # [pulumi.<cloud>] of a cloud this run does not touch is skipped like [<cloud>].
            cloud_part = key.split(".")[1] if head == "pulumi" and "." in key else None
            if head in skipped or cloud_part in skipped:
                continue
            # A later file overrides an earlier one (settings over defaults): keep the last.
            values[key] = (path, value)
    found = []
    for key, (path, value) in values.items():
        for kind, pattern in EXAMPLES:
            if pattern.search(value):
                found.append(Example(path, key, value, kind))
                break
    return found


def refuse_examples(
    environments: Sequence[str],
    clouds: Sequence[Cloud] = tuple(Cloud),
    root: Path = ENVIRONMENTS_DIR,
) -> None:
    """Raise SettingsError naming the first example value a live run would deploy."""
    for environment in environments:
        found = find_examples(environment, clouds, root)
        if found:
            raise found[0].error()
