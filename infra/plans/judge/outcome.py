"""What one stack's preview came to: counts of changes, verdicts and cost, or the error.

The console prints one line per stack (as short as Pulumi's own summary); the PR comment reads the
same records from ``results.jsonl`` beside the plan files (JSON Lines, so that the
``build/plans/*.json`` glob still finds plan files only), so a stack whose preview failed is still
reported, with its error, rather than left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from infra.plans.read.diff import StackDiff
from infra.plans.read.model import PlanError

RESULTS_FILE = "results.jsonl"

# Step operations grouped as Pulumi's summary counts them (`pulumi preview` prints
# "+ N to create, ~ N to update, +- N to replace, - N to delete").
COUNTED_OPS: dict[str, tuple[str, ...]] = {
    "create": ("create",),
    "update": ("update",),
    "replace": ("replace", "create-replacement", "delete-replaced"),
    "delete": ("delete",),
}


@dataclass
class StackOutcome:
    """One stack's preview: ``status`` is "ok" or "failed" (then ``error`` says why)."""

    stack: str
    status: str = "ok"
    error: str = ""
    mode: str = ""
    resources: int = 0
    # None when the preview had no baseline (no --against, not live): nothing to count against.
    changes: dict[str, int] | None = None
    policy_failures: int = 0
    policy_advisory: int = 0
    guard_blocked: int = 0
    guard_allowed: int = 0
    monthly_cost: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and not self.policy_failures and not self.guard_blocked

    def count_changes(self, diff: StackDiff) -> None:
        # A replacement shows as one "replace" step or a create-/delete-replaced pair; count once.
        replaced = {c.urn for c in diff.of_op(*COUNTED_OPS["replace"])}
        self.changes = {
            op: len({c.urn for c in diff.of_op(*ops)})
            for op, ops in COUNTED_OPS.items()
            if op != "replace"
        }
        self.changes["replace"] = len(replaced)

    def changes_text(self) -> str:
        if self.changes is None:
            return "no baseline"
        c = self.changes
        return (
            f"+{c['create']} to create, ~{c['update']} to update, "
            f"+-{c['replace']} to replace, -{c['delete']} to delete"
        )

    def verdict_text(self) -> str:
        policy = "policy FAIL" if self.policy_failures else "policy pass"
        if self.policy_failures or self.policy_advisory:
            policy += f" ({self.policy_failures} mandatory, {self.policy_advisory} advisory)"
        guard = f"guard FAIL ({self.guard_blocked} blocked)" if self.guard_blocked else "guard pass"
        if self.changes is None and not self.guard_blocked:
            guard = "guard not run (no baseline)"
        if self.guard_allowed:
            guard += f", {self.guard_allowed} allowed"
        cost = "" if self.monthly_cost is None else f"; ${self.monthly_cost:,.2f}/month"
        return f"{policy}; {guard}{cost}"

    def console_line(self) -> str:
        """One line: ``dev-aws: 131 resources; +2 to create, ...; policy pass; guard pass``."""
        if self.status != "ok":
            return f"{self.stack}: FAILED: {self.error}"
        return f"{self.stack}: {self.resources} resources; {self.changes_text()}; " + (
            self.verdict_text()
        )


def write_results(outcomes: Sequence[StackOutcome], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS_FILE
    lines = [json.dumps(asdict(o), sort_keys=True) + "\n" for o in outcomes]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _outcome(item: object, path: Path, line: int) -> StackOutcome:
    if not isinstance(item, dict) or not isinstance(item.get("stack"), str):
        raise PlanError(path, f"line {line}", "each result is an object with a string 'stack'")
    known = set(StackOutcome.__dataclass_fields__)
    unknown = sorted(set(item) - known)
    if unknown:
        raise PlanError(path, f"line {line}: {unknown[0]}", "unknown key")
    try:
        return StackOutcome(**item)
    except TypeError as exc:
        raise PlanError(path, f"line {line}", str(exc)) from None


def read_results(paths: Iterable[Path]) -> list[StackOutcome]:
    """Every outcome in the given ``results.jsonl`` files (or directories holding one)."""
    outcomes: list[StackOutcome] = []
    for given in paths:
        path = given / RESULTS_FILE if given.is_dir() else given
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PlanError(path, None, "file not found") from None
        for index, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PlanError(path, f"line {index + 1}", f"malformed JSON: {exc}") from None
            outcomes.append(_outcome(item, path, index + 1))
    return outcomes
