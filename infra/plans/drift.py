"""Read ``pulumi preview --json`` output: its steps, and the drift they show.

A drift check is a ``pulumi preview --refresh --expect-no-changes --json``: after the refresh,
any step other than ``same`` or ``read`` means the cloud no longer matches the code.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.plans.model import PlanError

# Ops that leave a resource as it is; every other op is a change, and after a refresh a drift.
UNCHANGED_OPS = frozenset({"same", "read"})

EXIT_CLEAN = 0
EXIT_ERROR = 1
EXIT_DRIFT = 2


@dataclass(frozen=True)
class Step:
    """One step of a preview: what the engine would do to one resource."""

    op: str
    urn: str
    new_state: dict[str, Any] | None
    keys: list[str]

    @property
    def type(self) -> str:
        if self.new_state and isinstance(self.new_state.get("type"), str):
            return str(self.new_state["type"])
        parts = self.urn.split("::")
        # urn:pulumi:<stack>::<project>::<parent$type>::<name>
        return parts[2].split("$")[-1] if len(parts) >= 4 else ""

    @property
    def name(self) -> str:
        return self.urn.split("::")[-1]

    @property
    def drifted(self) -> bool:
        return self.op not in UNCHANGED_OPS


@dataclass(frozen=True)
class DriftReport:
    """The drifted steps of one stack's refreshed preview."""

    name: str
    steps: list[Step]
    error: str | None = None
    drifted: list[Step] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "drifted", [s for s in self.steps if s.drifted])

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return EXIT_ERROR
        return EXIT_DRIFT if self.drifted else EXIT_CLEAN


def _changed_keys(step: dict[str, Any], where: str, source: Path | str) -> list[str]:
    """Property keys a step changes: detailedDiff's keys, else diffReasons and replaceReasons."""
    keys: list[str] = []
    detailed = step.get("detailedDiff")
    if detailed is not None:
        if not isinstance(detailed, dict):
            raise PlanError(source, f"{where}.detailedDiff", "not an object")
        keys += [str(k) for k in detailed]
    for reasons_key in ("diffReasons", "replaceReasons"):
        reasons = step.get(reasons_key)
        if reasons is None:
            continue
        if not isinstance(reasons, list):
            raise PlanError(source, f"{where}.{reasons_key}", "not a list")
        keys += [str(k) for k in reasons]
    return sorted(set(keys))


def parse_preview(data: object, source: Path | str) -> list[Step]:
    """The steps of decoded ``pulumi preview --json``; raise PlanError naming the first bad key."""
    if not isinstance(data, dict):
        raise PlanError(source, None, "not a `pulumi preview --json` object")
    raw = data.get("steps")
    if not isinstance(raw, list):
        raise PlanError(
            source, "steps", "missing or not a list: not a `pulumi preview --json` output"
        )
    steps = []
    for index, item in enumerate(raw):
        where = f"steps[{index}]"
        if not isinstance(item, dict):
            raise PlanError(source, where, "not an object")
        for key in ("op", "urn"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise PlanError(source, f"{where}.{key}", "missing or not a string")
        new_state = item.get("newState")
        if new_state is not None and not isinstance(new_state, dict):
            raise PlanError(source, f"{where}.newState", "not an object")
        steps.append(Step(item["op"], item["urn"], new_state, _changed_keys(item, where, source)))
    return steps


def decode(text: str, source: Path | str) -> object:
    """Decode preview JSON text, or raise PlanError naming the source."""
    if not text.strip():
        raise PlanError(source, None, "empty: no `pulumi preview --json` output")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(source, None, f"malformed JSON: {exc}") from None


def read_preview(path: Path) -> list[Step]:
    """The steps of a saved ``pulumi preview --json`` file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(path, None, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(path, None, f"cannot read: {exc}") from None
    return parse_preview(decode(text, path), path)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


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
    lines += ["| op | type | name | changed properties | urn |", "|---|---|---|---|---|"]
    for step in sorted(report.drifted, key=lambda s: (s.op, s.urn)):
        keys = ", ".join(f"`{k}`" for k in step.keys) or "-"
        lines.append(f"| `{step.op}` | `{step.type}` | {_cell(step.name)} | {_cell(keys)} "
                     f"| `{_cell(step.urn)}` |")  # fmt: skip
    return "\n".join([*lines, ""])


def summary_markdown(reports: list[DriftReport]) -> str:
    """The combined drift summary: one line per stack."""
    lines = ["# Drift summary", "", "| stack | result |", "|---|---|"]
    for report in reports:
        if report.error is not None:
            result = f"error: {_cell(report.error)}"
        elif report.drifted:
            result = f"**drift** in {len(report.drifted)} resources"
        else:
            result = "no drift"
        lines.append(f"| {report.name} | {result} |")
    return "\n".join([*lines, ""])


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
