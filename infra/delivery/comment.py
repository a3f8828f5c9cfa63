"""The pull-request comment: every affected stack (failed previews with their error), the commit and
the run, under GitHub's 65,536-character limit, edited in place on each push.

The summary table always fits; the full report follows collapsed in ``<details>`` and is cut at a
line boundary when it would not fit, with a pointer to the run's artifact that holds it whole.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from infra.delivery.github import BODY_LIMIT
from infra.errors import InfraError
from infra.plans.judge.outcome import StackOutcome
from infra.plans.judge.report import outcome_table

# Room kept below the limit for the closing lines and the truncation note.
_MARGIN = 1_000


class CommentError(InfraError):
    """Input the comment cannot be built from (a malformed matrix)."""


def marker(kind: str) -> str:
    return f"<!-- billing-preview:{kind} -->"


def expected_stacks(matrix: str | None) -> list[str]:
    """The stack keys of an ``affected`` matrix (``{"include": [{"stack": ...}]}``)."""
    if not matrix:
        return []
    try:
        data = json.loads(matrix)
        return [str(entry["stack"]) for entry in data["include"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CommentError(f"--expect: not an affected matrix ({exc})") from None


def with_missing(outcomes: Sequence[StackOutcome], expected: Sequence[str]) -> list[StackOutcome]:
    """Every expected stack: one whose job reported nothing is listed as failed, never dropped."""
    by_stack = {o.stack: o for o in outcomes}
    missing = [
        StackOutcome(s, status="failed", error="no result: the preview job ended before reporting")
        for s in expected
        if s not in by_stack
    ]
    return [*outcomes, *missing]


def _fit(report: str, room: int, artifact: str) -> str:
    if len(report) <= room:
        return report
    cut = report.rfind("\n", 0, room)
    kept = report[: cut if cut > 0 else room]
    # An open code fence would swallow the note.
    if kept.count("```") % 2:
        kept += "\n```"
    note = (
        f"**Report cut at {len(kept):,} of {len(report):,} characters to fit GitHub's comment "
        f"limit; the whole report is the run's `{artifact}` artifact.**"
    )
    return f"{kept}\n\n{note}"


def comment_body(
    outcomes: Sequence[StackOutcome],
    report: str,
    *,
    kind: str,
    title: str,
    commit: str,
    run_url: str,
    artifact: str,
) -> str:
    """The comment: marker, heading with commit and run, the stack table, the collapsed report."""
    failed = [o for o in outcomes if not o.ok]
    status = f"{len(failed)} of {len(outcomes)} stacks need attention" if failed else "all pass"
    head = [
        marker(kind),
        f"### {title}: {status}",
        "",
        f"Commit `{commit[:12]}` · [workflow run]({run_url})"
        if run_url
        else f"Commit `{commit[:12]}`",
        "",
    ]
    head += outcome_table(outcomes) if outcomes else ["This change touches no stack."]
    head.append("")
    opening, closing = "<details><summary>Full report</summary>\n\n", "\n\n</details>\n"
    room = BODY_LIMIT - _MARGIN - len("\n".join(head)) - len(opening) - len(closing)
    if not report.strip():
        return "\n".join(head)
    return "\n".join(head) + opening + _fit(report.strip(), room, artifact) + closing


def read_reports(paths: Sequence[Path]) -> str:
    """The reports, one after another (a missing one is skipped: its stack shows as failed)."""
    texts = [p.read_text(encoding="utf-8") for p in paths if p.is_file()]
    return "\n\n".join(t.strip() for t in texts)
