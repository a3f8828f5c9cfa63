"""Destructive-change guard: no stateful resource is deleted or replaced in an environment of a
hardened tier (staging, production) unless its URN is allowed: reviewed in
``environments/<env>/allow-replace.toml`` (with a reason and an expiry date; see
``infra.plans.judge.allowances``) or named for one run with ``--allow-replace``.

It reads an offline diff (``preview --against REF``) or the steps of a live
``pulumi preview --json``. An offline diff sees only inputs, so an update to an input that the
provider can only apply by replacing the resource counts as a replacement here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.plans.judge.allowances import Allowance
from infra.plans.judge.report import Verdict
from infra.plans.read.diff import Change, StackDiff
from infra.plans.read.formats import Preview, Step, Urn, read_preview
from infra.plans.read.stateful import REPLACE_KEYS, is_replica, restore_keys
from infra.settings import promotion, tier_of


def as_replacement(change: Change) -> Change:
    """An update to a replace-triggering input of a stateful type, seen as the replace it is."""
    forcing = [k for k in change.keys if k in REPLACE_KEYS.get(change.type, frozenset())]
    if change.op == "update" and forcing:
        return Change(change.urn, change.type, "replace", forcing, replica=change.replica)
    return change


def environment_of(stack: str) -> str:
    """The environment of a stack key ``<env>-<cloud>``."""
    return stack.rsplit("-", 1)[0]


@dataclass(frozen=True)
class GuardResult:
    blocked: list[tuple[str, Change]] = field(default_factory=list)
    allowed: list[tuple[str, Change]] = field(default_factory=list)
    unused_allowances: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    # Restores beside the live instance: new instances, nothing deleted, so nothing is lost.
    restores: list[tuple[str, Change]] = field(default_factory=list)
    source: str = ""
    # Why each allowed URN may go: the reviewed entry's reason, or "--allow-replace".
    reasons: dict[str, str] = field(default_factory=dict)
    expired: list[Allowance] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.blocked and not self.expired


def guard(
    diffs: Sequence[StackDiff],
    allow: Collection[str] = (),
    source: str = "",
    reviewed: Sequence[Allowance] = (),
    today: dt.date | None = None,
) -> GuardResult:
    """Fail every destructive change to a stateful resource in a guarded environment.

    ``allow`` names URNs for this run (``--allow-replace``); ``reviewed`` are the entries of the
    environments' ``allow-replace.toml``: an expired entry allows nothing and fails the guard.
    """
    day = today or dt.datetime.now(dt.UTC).date()
    result = GuardResult(source=source)
    result.expired.extend(a for a in reviewed if a.expired(day))
    reasons = dict.fromkeys(allow, "`--allow-replace`")
    reasons.update({a.urn: a.reason for a in reviewed if not a.expired(day)})
    result.reasons.update(reasons)
    used: set[str] = set()
    for diff in diffs:
        tier = tier_of(environment_of(diff.stack))
        if tier is None or not tier.hardened:
            continue
        result.checked.append(diff.stack)
        for change in map(as_replacement, diff.changes):
            if change.restore:
                result.restores.append((diff.stack, change))
            if not (change.destructive and change.stateful):
                continue
            if change.urn in reasons:
                used.add(change.urn)
                result.allowed.append((diff.stack, change))
            else:
                result.blocked.append((diff.stack, change))
    result.unused_allowances.extend(sorted(set(allow) - used))
    return result


# -- live: `pulumi preview --json` ---------------------------------------------------------------


def _replica(step: Step) -> bool:
    """A read replica (before or after the step) holds no data of its own."""
    states = (step.new_state, step.old_state)
    return any(state is not None and is_replica(step.type, state.inputs) for state in states)


def _change(step: Step) -> Change:
    keys = step.keys
    state = step.new_state or step.old_state
    if step.op == "create" and state is not None:
        # A created database names the restore it starts from, if any.
        keys = restore_keys(step.type, state.inputs)
    return Change(step.urn, step.type, step.op, keys, replica=_replica(step))


def changes_from_preview(preview: Preview) -> list[Change]:
    """The changes in one stack's ``pulumi preview --json``: every step that is not unchanged."""
    return [_change(step) for step in preview.steps if step.changed]


def diff_from_preview(preview: Preview) -> StackDiff:
    """One stack's preview as a diff, keyed ``<env>-<cloud>`` from its URNs."""
    stack = ""
    try:
        urn = Urn.parse(preview.steps[0].urn)
    except (IndexError, ValueError):
        pass  # no steps, or none that names a stack
    else:
        # Projects are billing-aws and billing-gcp.
        stack = f"{urn.stack}-{urn.project.removeprefix('billing-')}"
    return StackDiff(stack, changes_from_preview(preview))


def load_preview(path: Path) -> StackDiff:
    return diff_from_preview(read_preview(path))


# -- report --------------------------------------------------------------------------------------


def _line(stack: str, change: Change) -> str:
    keys = f" ({', '.join(change.keys)})" if change.keys else ""
    return f"- {stack}: `{change.op}` `{change.urn}`{keys}"


def verdict(result: GuardResult | None) -> Verdict:
    title = "Destructive-change guard"
    if result is None:
        return Verdict(
            title,
            ok=True,
            markdown=(
                "No baseline: run with `--against REF` (offline) or from a live preview to check "
                "for deletions and replacements of stateful resources."
            ),
        )
    checked = ", ".join(result.checked) or "no guarded stacks"
    guarded = ", ".join(sorted(promotion().hardened))
    lines = [f"Checked {checked} against {result.source} (guarded: {guarded})."]
    if result.expired:
        lines += [
            "",
            "**Expired entries in allow-replace.toml (they allow nothing; remove or renew them):**",
        ]
        lines += [f"- {a.file}: `{a.urn}` expired {a.expires}: {a.reason}" for a in result.expired]
    if result.blocked:
        lines += ["", "**Would delete or replace a resource that holds data:**"]
        lines += [_line(s, c) for s, c in result.blocked]
        lines += [
            "",
            (
                "If this is intended, add each URN with a reason and an expiry date to "
                "`environments/<env>/allow-replace.toml` in a reviewed pull request."
            ),
        ]
    if result.restores:
        lines += [
            "",
            (
                "Restored beside the live database (nothing is deleted, so no data is lost; "
                "the old instance stays until a later change removes it):"
            ),
        ]
        lines += [_line(s, c) for s, c in result.restores]
    if result.allowed:
        lines += ["", "Allowed by `--allow-replace` or `allow-replace.toml`:"]
        lines += [f"{_line(s, c)}: {result.reasons.get(c.urn, '')}" for s, c in result.allowed]
    if result.unused_allowances:
        lines += ["", "`--allow-replace` URNs that matched no destructive change:"]
        lines += [f"- `{urn}`" for urn in result.unused_allowances]
    if not (result.blocked or result.allowed):
        lines += ["", "No stateful resource is deleted or replaced."]
    return Verdict(title, result.ok, "\n".join(lines))
