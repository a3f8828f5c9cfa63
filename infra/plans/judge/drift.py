"""The drift report: what a refreshed ``pulumi preview --json`` shows changed in the cloud.

A drift check is a ``pulumi preview --refresh --expect-no-changes --json``: after the refresh,
any step other than ``same`` or ``read`` means the cloud no longer matches the code. The preview
itself is read by :mod:`infra.plans.read.formats`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from infra.errors import EXIT_DRIFT, EXIT_ERROR, EXIT_OK
from infra.markdown import table
from infra.plans.read.formats import Step


@dataclass(frozen=True)
class DriftReport:
    """The drifted steps of one stack's refreshed preview."""

    name: str
    steps: list[Step]
    error: str | None = None
    drifted: list[Step] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "drifted", [s for s in self.steps if s.changed])

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_ERROR
        return EXIT_DRIFT if self.drifted else EXIT_OK


def markdown(report: DriftReport) -> str:
    """One stack's drift report: every drifted resource with its op and changed properties."""
    lines = [f"# Drift: {report.name}", ""]
    if report.error is not None:
        return "\n".join([*lines, f"**Error:** {report.error}", ""])
    if not report.drifted:
        lines.append(f"No drift: {len(report.steps)} resources match their recorded state.")
        return "\n".join([*lines, ""])
    counts = Counter(s.op for s in report.drifted)
    summary = ", ".join(f"{n} {op}" for op, n in sorted(counts.items()))
    found = f"{len(report.drifted)} of {len(report.steps)} resources ({summary})"
    lines += [f"**Drift found** in {found}.", ""]
    rows = [
        [
            f"`{step.op}`",
            f"`{step.type}`",
            step.name,
            ", ".join(f"`{k}`" for k in step.keys) or "-",
            f"`{step.urn}`",
        ]
        for step in sorted(report.drifted, key=lambda s: (s.op, s.urn))
    ]
    lines += table(["op", "type", "name", "changed properties", "urn"], rows)
    return "\n".join([*lines, ""])


def summary_markdown(reports: list[DriftReport]) -> str:
    """The combined drift summary: one line per stack."""
    rows = []
    for report in reports:
        if report.error is not None:
            result = f"error: {report.error}"
        elif report.drifted:
            result = f"**drift** in {len(report.drifted)} resources"
        else:
            result = "no drift"
        rows.append([report.name, result])
    return "\n".join(["# Drift summary", "", *table(["stack", "result"], rows), ""])


def console_line(report: DriftReport) -> str:
    if report.error is not None:
        return f"{report.name}: error: {report.error}"
    if report.drifted:
        ops = Counter(s.op for s in report.drifted)
        return (
            f"{report.name}: DRIFT in {len(report.drifted)} resources ("
            + ", ".join(f"{n} {op}" for op, n in sorted(ops.items()))
            + ")"
        )
    return f"{report.name}: no drift ({len(report.steps)} resources)"


def write_report(report: DriftReport, out_dir: Path) -> Path:
    """Write ``out_dir/<name>.md`` (write-then-rename: a reader never sees half a report)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{report.name}.md"
    partial = path.with_suffix(".md.partial")
    partial.write_text(markdown(report), encoding="utf-8")
    partial.replace(path)
    return path
