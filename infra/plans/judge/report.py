"""Readable summaries: one block per stack on the console, one markdown report for a PR."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from infra.markdown import cell, table
from infra.plans.judge.outcome import StackOutcome
from infra.plans.read.diff import Change, StackDiff
from infra.plans.read.formats import short
from infra.plans.read.model import Plan
from infra.plans.read.stateful import is_stateful


@dataclass(frozen=True)
class Verdict:
    """A check's outcome for the report: policy, destructive-change guard, cost, drift."""

    title: str
    ok: bool
    markdown: str


def summary(plan: Plan) -> str:
    """A console block: counts of resources by type, protected and stateful."""
    custom = [r for r in plan.resources if r.custom]
    protected = sum(1 for r in custom if r.protect)
    stateful = sum(1 for r in custom if is_stateful(r.type))
    lines = [
        (
            f"{plan.key} ({plan.mode}, stack {plan.stack}): {len(custom)} resources, "
            f"{stateful} stateful, {protected} protected"
        )
    ]
    counts = Counter(r.type for r in custom)
    lines += [f"    {count:4d}  {type_}" for type_, count in sorted(counts.items())]
    return "\n".join(lines)


def _change_line(change: Change) -> str:
    keys = f" ({', '.join(change.keys)})" if change.keys else ""
    return f"- `{change.op}` {short(change.urn)}{keys}"


def diff_markdown(diff: StackDiff) -> str:
    if not diff.changes:
        return f"### {diff.stack}\nNo changes.\n"
    lines = [f"### {diff.stack}"]
    danger = diff.destructive_stateful
    if danger:
        lines.append("**Stateful resources deleted or replaced:**")
        lines += [_change_line(c) for c in danger]
    for title, ops in (
        ("Created", ("create",)),
        ("Deleted", ("delete",)),
        ("Replaced", ("replace", "create-replacement", "delete-replaced")),
        ("Changed", ("update",)),
    ):
        found = [c for c in diff.of_op(*ops) if c not in danger]
        if found:
            lines.append(f"<details><summary>{title}: {len(found)}</summary>\n")
            lines += [_change_line(c) for c in found]
            lines.append("\n</details>")
    return "\n".join(lines) + "\n"


def markdown(
    plans: Sequence[Plan],
    diffs: Sequence[StackDiff] | None = None,
    against: str | None = None,
    verdicts: Sequence[Verdict] = (),
    outcomes: Sequence[StackOutcome] = (),
) -> str:
    """The combined report for every stack: the body of a PR comment."""
    modes = sorted({p.mode for p in plans})
    lines = ["# Preview report", ""]
    if "offline" in modes:
        lines.append(
            "Offline render: every stack ran in-process under the Pulumi SDK's mock runtime "
            "(no Pulumi CLI, no cloud credentials). Provider-assigned values are placeholders."
        )
        lines.append("")
    if outcomes:
        lines += [*outcome_table(outcomes), ""]
    rows = []
    for plan in plans:
        custom = [r for r in plan.resources if r.custom]
        stateful = sum(1 for r in custom if is_stateful(r.type))
        rows.append(
            [plan.key, plan.mode, len(custom), stateful, sum(1 for r in custom if r.protect)]
        )
    lines += table(["Stack", "Mode", "Resources", "Stateful", "Protected"], rows, right={2, 3, 4})
    lines.append("")
    if diffs is not None:
        lines += [f"## Changes against `{against}`", ""]
        # Stacks that lose data first.
        ordered = sorted(diffs, key=lambda d: (not d.destructive_stateful, d.stack))
        lines += [diff_markdown(d) for d in ordered]
    for verdict in verdicts:
        mark = "pass" if verdict.ok else "FAIL"
        lines += [f"## {verdict.title}: {mark}", "", verdict.markdown.rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def outcome_table(outcomes: Sequence[StackOutcome]) -> list[str]:
    """One row per stack, failed ones included with their error."""
    rows: list[list[object]] = []
    for o in outcomes:
        if o.status != "ok":
            rows.append([o.stack, "**preview failed**", "", "", "", "", cell(o.error, 400)])
            continue
        c = o.changes or {}
        counts = [str(c[k]) if k in c else "-" for k in ("create", "update", "replace", "delete")]
        result = "ok" if o.ok else "**FAIL**"
        rows.append([o.stack, result, *counts, cell(o.verdict_text(), 400)])
    header = ["Stack", "Result", "Create", "Update", "Replace", "Delete", "Checks"]
    return table(header, rows, right={2, 3, 4, 5})
