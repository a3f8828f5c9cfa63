"""Disaster-recovery drill: render a restore of an environment into a throwaway stack, offline,
and check it the way a restore pull request is checked (plan, guard, policy, cost).

A restore is a settings change (``[database.restore]`` in ``environments/<env>/settings.toml``);
the drill makes that change in memory only, to a point in time a few minutes back, and renders
the environment with and without it. Nothing is deployed and no file under environments/ moves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from infra.cost.estimate import estimate, money
from infra.markdown import table
from infra.plans.judge.guard import GuardResult, guard
from infra.plans.judge.guard import verdict as guard_verdict
from infra.plans.produce.offline import PROJECTS, render
from infra.plans.read.diff import diff_plans
from infra.plans.read.model import Plan, Resource
from infra.policy.runner import evaluate_plan
from infra.settings import Cloud, EnvironmentSettings, RestoreSettings

DRILL_ID = "drill"
# The drill restores to this far back: inside the 5-minute RPO every seed states.
RPO = dt.timedelta(minutes=5)
RDS = "aws:rds/instance:Instance"
SQL = "gcp:sql/databaseInstance:DatabaseInstance"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class StackDrill:
    """One stack's drill: the plans before and after the restore, and what was checked."""

    cloud: Cloud
    before: Plan
    after: Plan
    guard: GuardResult
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def cost_delta(self) -> float:
        return estimate(self.after).total - estimate(self.before).total


@dataclass
class DrillResult:
    environment: str
    restore_time: str
    stacks: list[StackDrill]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.stacks)


def with_restore(env: EnvironmentSettings, when: dt.datetime) -> EnvironmentSettings:
    """``env`` as a restore pull request would change it: restore to ``when`` and switch."""
    restore = RestoreSettings.model_validate(
        {"id": DRILL_ID, "point_in_time": when, "switch": True}
    )
    database = env.database.model_copy(update={"restore": restore})
    return env.model_copy(update={"database": database})


def _named(plan: Plan, type_: str, name: str) -> Resource | None:
    return next((r for r in plan.of_type(type_) if r.name == name), None)


RESTORED = f"database-restore-{DRILL_ID}"


def _check_aws(env: EnvironmentSettings, after: Plan, when: str) -> list[Check]:
    live = _named(after, RDS, "database-instance")
    restored = _named(after, RDS, RESTORED)
    checks = [
        Check("restored instance", restored is not None, "RDS instance from the point in time")
    ]
    if restored is None or live is None:
        return [*checks, Check("live instance kept", live is not None, "database-instance")]
    source = restored.inputs.get("restoreToPointInTime") or {}
    checks.append(
        Check(
            "restored from the point in time",
            source.get("restoreTime") == when
            and source.get("sourceDbInstanceIdentifier") == live.inputs.get("identifier"),
            f"restoreToPointInTime {source}",
        )
    )
    checks.append(
        Check(
            "live instance kept",
            live.protect is env.is_production
            and live.inputs.get("deletionProtection") is env.database.deletion_protection,
            f"{live.inputs.get('identifier')}: protect {live.protect}, "
            f"deletionProtection {live.inputs.get('deletionProtection')}",
        )
    )
    identifier = str(restored.inputs.get("identifier"))
    hosts = set()
    for task in after.of_type("aws:ecs/taskDefinition:TaskDefinition"):
        for container in json.loads(task.inputs.get("containerDefinitions") or "[]"):
            for item in container.get("environment", []):
                if item.get("name") == "DATABASE_HOST":
                    hosts.add(str(item.get("value")))
    switched = bool(hosts) and all(h.startswith(f"{identifier}.") for h in hosts)
    checks.append(Check("services switched", switched, f"DATABASE_HOST {sorted(hosts)}"))
    replicas = [r for r in after.of_type(RDS) if r.inputs.get("replicateSourceDb")]
    checks.append(
        Check(
            "replicas follow the restored instance",
            all(r.inputs["replicateSourceDb"] == identifier for r in replicas),
            f"{len(replicas)} replicas",
        )
    )
    return checks


def _check_gcp(env: EnvironmentSettings, after: Plan, when: str) -> list[Check]:
    live = _named(after, SQL, "database-instance")
    restored = _named(after, SQL, RESTORED)
    checks = [Check("restored instance", restored is not None, "Cloud SQL clone")]
    if restored is None or live is None:
        return [*checks, Check("live instance kept", live is not None, "database-instance")]
    clone = restored.inputs.get("clone") or {}
    checks.append(
        Check(
            "restored from the point in time",
            clone.get("pointInTime") == when
            and clone.get("sourceInstanceName") == live.inputs.get("name"),
            f"clone {clone}",
        )
    )
    checks.append(
        Check(
            "live instance kept",
            live.protect is env.is_production,
            f"{live.inputs.get('name')}: protect {live.protect}",
        )
    )
    address = after.outputs.get("cloud_sql_private_ip")
    hosts = set()
    for service in after.resources:
        if not service.type.startswith("gcp:cloudrunv2/"):
            continue
        template = service.inputs.get("template") or {}
        inner = template.get("template", template)
        for container in inner.get("containers", []):
            for item in container.get("envs", []):
                if item.get("name") == "DATABASE_HOST":
                    hosts.add(str(item.get("value")))
    connection = str(after.outputs.get("cloud_sql_connection_name", ""))
    switched = connection.endswith(f":{restored.inputs.get('name')}") and hosts == {address}
    checks.append(
        Check("services switched", switched, f"{connection}; DATABASE_HOST {sorted(hosts)}")
    )
    return checks


def run(env: EnvironmentSettings, now: dt.datetime | None = None) -> DrillResult:
    """Render ``env`` and its restore per cloud; check the restore as its pull request would."""
    moment = (now or dt.datetime.now(dt.UTC)) - RPO
    when = moment.replace(microsecond=0)
    drilled = with_restore(env, when)
    restore = drilled.database.restore
    assert restore is not None  # noqa: S101 - set just above
    stacks = []
    for cloud in env.clouds:
        before = render(env, cloud)
        after = render(drilled, cloud)
        # A throwaway stack: the same resources under a stack nobody deploys.
        after = dataclasses.replace(after, stack=f"{PROJECTS[cloud]}/{env.name}-dr-drill")
        result = guard([diff_plans(f"{env.name}-{cloud.value}", before, after)], source="the drill")
        drill = StackDrill(cloud, before, after, result)
        time = restore.restore_time or ""
        drill.checks += (
            _check_aws(env, after, time) if cloud is Cloud.AWS else _check_gcp(env, after, time)
        )
        drill.checks.append(
            Check(
                "guard: no data lost",
                result.ok and bool(result.restores),
                f"{len(result.restores)} restore(s), {len(result.blocked)} blocked",
            )
        )
        blocking = [f for f in evaluate_plan(after, drilled) if f.blocking]
        drill.checks.append(
            Check(
                "policy: no mandatory failure",
                not blocking,
                "; ".join(f"{f.rule}: {f.urn.rsplit('::', 1)[-1]}" for f in blocking) or "clean",
            )
        )
        stacks.append(drill)
    return DrillResult(env.name, restore.restore_time or "", stacks)


def markdown(result: DrillResult) -> str:
    """The drill's report: each check per stack, the guard's verdict and the cost of the restore."""
    lines = [
        f"# Disaster-recovery drill: {result.environment}",
        "",
        (
            f"Restore to {result.restore_time} (now minus the 5-minute RPO), rendered offline into "
            "a throwaway stack; nothing deployed. "
            f"Result: **{'pass' if result.ok else 'FAIL'}**."
        ),
    ]
    for stack in result.stacks:
        checks = [[c.name, "pass" if c.ok else "FAIL", c.detail] for c in stack.checks]
        lines += ["", f"## {stack.after.stack}", "", *table(["Check", "Result", "Detail"], checks)]
        before, after = estimate(stack.before).total, estimate(stack.after).total
        lines += [
            "",
            (
                f"Cost while both instances run: {money(after)} a month against {money(before)} "
                f"({'+' if stack.cost_delta >= 0 else '-'}{money(abs(stack.cost_delta))})."
            ),
            "",
            guard_verdict(stack.guard).markdown,
        ]
    return "\n".join(lines) + "\n"


def write(result: DrillResult, out: Path) -> Path:
    """Write the drill's plans and report under ``out``; return the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    for stack in result.stacks:
        stack.after.write(out)
    report = out / "report.md"
    report.write_text(markdown(result), encoding="utf-8")
    return report
