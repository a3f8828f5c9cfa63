"""The drift lifecycle: after every drift check (scheduled, and right after each deploy) the issue
of each stack is opened, reopened, updated or closed; a stack whose check did not run is "unknown".

Input: the drift jobs' outputs, ``<stack>.md`` (``nox -s drift`` writes it) beside
``<stack>.exit`` (the check's exit code: 0 clean, 2 drift, anything else an error), anywhere
under ``--reports``. A stack with no exit code is unknown, never skipped.

Cloud drift or code not deployed: the check previews the environment's branch, so a commit merged
but not yet deployed shows as a difference too. When the branch head is not the environment's
newest successful deployment and the commits between touch the stack, the issue says so.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from github.Repository import Repository

from infra.delivery.affected import AffectedError, affected
from infra.delivery.release import ReleaseError, deployed_commit
from infra.delivery.tracker import Action, Subject, Synced, sync_issue
from infra.settings import EnvironmentSettings, known_environments, load_environment

LABEL = "drift"


def subject(stack: str) -> Subject:
    return Subject("drift", stack, LABEL, f"Drift: {stack}")


@dataclass(frozen=True)
class StackDrift:
    stack: str
    state: str  # "clean", "drift" or "unknown"
    report: str
    pending: str = ""  # why differences may be an undeployed merge, not the cloud


def _exit_code(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def read_checks(reports: Path, stacks: list[str]) -> list[StackDrift]:
    """Each expected stack's state from the files under ``reports``."""
    found: list[StackDrift] = []
    for stack in stacks:
        exits = sorted(reports.rglob(f"{stack}.exit")) if reports.is_dir() else []
        texts = sorted(reports.rglob(f"{stack}.md")) if reports.is_dir() else []
        report = texts[0].read_text(encoding="utf-8") if texts else ""
        code = _exit_code(exits[0]) if exits else None
        if code == 0:
            found.append(StackDrift(stack, "clean", report))
        elif code == 2:
            found.append(StackDrift(stack, "drift", report))
        else:
            why = "no result: the check did not run or ended before reporting"
            if code is not None:
                why = f"the check failed (exit {code})"
            found.append(StackDrift(stack, "unknown", report or f"**Error:** {why}"))
    return found


def pending_notes(
    repo: Repository | None, checkout: Path, remote: str, envs: list[EnvironmentSettings]
) -> dict[str, str]:
    """Stack -> a note when merged commits touching it are not deployed yet."""
    notes: dict[str, str] = {}
    if repo is None:
        return notes
    for env in envs:
        head_ref = f"{remote}/{env.branch}"
        try:
            deployed = deployed_commit(repo, env.name)
            for stack in affected(checkout, deployed, head_ref, [env.name]):
                notes[stack.key] = (
                    f"The `{env.branch}` branch has commits touching this stack that are not "
                    f"deployed yet (deployed: `{deployed[:12]}`): some differences may be that "
                    "merge waiting for its deploy rather than a change made in the cloud."
                )
        except (ReleaseError, AffectedError) as exc:
            for cloud in env.clouds:
                notes[f"{env.name}-{cloud.value}"] = f"Could not compare with the deployment: {exc}"
    return notes


def body(check: StackDrift) -> str:
    state = {
        "drift": "**drift**: the stack differs from its code",
        "unknown": "**unknown**: the drift check could not run, so drift cannot be ruled out",
        "clean": "clean",
    }[check.state]
    lines = [f"State: {state}.", ""]
    if check.pending:
        lines += [f"> {check.pending}", ""]
    lines += [check.report.strip()]
    return "\n".join(lines)


def note(check: StackDrift, run: str) -> str:
    where = f" in [this run]({run})" if run else ""
    return {
        "drift": f"Drift found{where}; the issue body has the current report.",
        "unknown": f"The drift check could not run{where}: drift is unknown, not absent.",
        "clean": f"No drift{where}: closing.",
    }[check.state]


def sync_all(repo: Repository, checks: list[StackDrift], run: str) -> list[Synced]:
    """One issue per stack: every stack is synced, a failing one hides none of the others."""
    return [
        sync_issue(
            repo, subject(c.stack), problem=c.state != "clean", body=body(c), note=note(c, run)
        )
        for c in checks
    ]


def expected_stacks(names: list[str] | None) -> list[EnvironmentSettings]:
    return [load_environment(n) for n in (names or known_environments())]


def summary(results: list[Synced], checks: list[StackDrift]) -> list[str]:
    states = {c.stack: c.state for c in checks}
    return [
        f"{r.subject.key}: {states[r.subject.key]}; issue "
        + (f"#{r.number} {r.action.value}" if r.number else "none")
        for r in results
    ]


def open_drift(repo: Repository, env: EnvironmentSettings) -> list[tuple[str, int]]:
    """The environment's stacks with an open drift issue (drift or unknown), with the number."""
    from infra.delivery.tracker import open_issue  # noqa: PLC0415

    found = []
    for cloud in env.clouds:
        stack = f"{env.name}-{cloud.value}"
        number = open_issue(repo, subject(stack))
        if number is not None:
            found.append((stack, number))
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--reports", required=True, help="directory holding <stack>.md and <stack>.exit files")
    add("--env", action="append", metavar="ENV", help="environments checked (default: all)")
    add("--repo", default=".", help="the git checkout, to tell undeployed merges from drift")
    add("--remote", default="origin", help="remote whose environment branches are compared")


__all__ = ["Action", "add_arguments", "open_drift", "read_checks", "sync_all"]
