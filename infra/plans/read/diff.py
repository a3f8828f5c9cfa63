"""Diff two sets of plans: what a change creates, deletes and changes, per stack."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infra.errors import InfraError
from infra.plans.read.model import Plan
from infra.plans.read.stateful import RESTORE_INPUTS, is_replica, is_stateful, restore_keys

# Step operations that remove a resource's data, as `pulumi preview --json` names them.
DESTRUCTIVE_OPS = frozenset(
    {
        "delete",
        "replace",
        "create-replacement",
        "delete-replaced",
        "discard-replaced",
        "import-replacement",
    }
)


class DiffError(InfraError):
    """A git ref that cannot be rendered."""


@dataclass(frozen=True)
class Change:
    urn: str
    type: str
    op: str  # create, delete, update, replace, ...
    keys: list[str] = field(default_factory=list)
    # A read replica holds no data of its own: replacing or deleting it is not destructive.
    replica: bool = False

    @property
    def stateful(self) -> bool:
        return is_stateful(self.type) and not self.replica

    @property
    def destructive(self) -> bool:
        return self.op in DESTRUCTIVE_OPS

    @property
    def restore(self) -> bool:
        """A database instance created from a point in time, a snapshot or a backup."""
        return self.op == "create" and bool(self.keys) and self.type in RESTORE_INPUTS


@dataclass(frozen=True)
class StackDiff:
    stack: str  # "<env>-<cloud>"
    changes: list[Change]

    def of_op(self, *ops: str) -> list[Change]:
        return [c for c in self.changes if c.op in ops]

    @property
    def destructive_stateful(self) -> list[Change]:
        return [c for c in self.changes if c.destructive and c.stateful]


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Top-level input keys whose values differ."""
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def diff_plans(key: str, before: Plan | None, after: Plan | None) -> StackDiff:
    old = before.by_urn() if before else {}
    new = after.by_urn() if after else {}
    changes: list[Change] = []
    for urn in sorted(set(old) | set(new)):
        replica = any(is_replica(p[urn].type, p[urn].inputs) for p in (old, new) if urn in p)
        if urn not in old:
            # A restore's create names its source (restoreToPointInTime, clone, ...).
            keys = restore_keys(new[urn].type, new[urn].inputs)
            changes.append(Change(urn, new[urn].type, "create", keys, replica=replica))
        elif urn not in new:
            changes.append(Change(urn, old[urn].type, "delete", replica=replica))
        else:
            keys = changed_keys(old[urn].inputs, new[urn].inputs)
            if old[urn].protect != new[urn].protect:
                keys.append("(protect)")
            if keys:
                changes.append(Change(urn, new[urn].type, "update", keys, replica=replica))
    return StackDiff(key, changes)


def diff_plan_sets(before: dict[str, Plan], after: dict[str, Plan]) -> list[StackDiff]:
    return [diff_plans(k, before.get(k), after.get(k)) for k in sorted(set(before) | set(after))]
