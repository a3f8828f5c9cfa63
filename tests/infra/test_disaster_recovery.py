"""Disaster recovery as code: a restore is a settings change; the guard and the drill judge it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from infra import drill
from infra.cli import main
from infra.plans.judge.guard import guard, verdict
from infra.plans.produce.offline import render
from infra.plans.read.diff import diff_plans
from infra.plans.read.model import Plan, Resource
from infra.policy.runner import evaluate_plan
from infra.settings import (
    Cloud,
    EnvironmentSettings,
    SettingsError,
    environment,
    load_environment,
)

RDS = "aws:rds/instance:Instance"
SQL = "gcp:sql/databaseInstance:DatabaseInstance"
WHEN = "2026-11-29T07:55:00Z"


def restored(env: str = "production", **restore: Any) -> EnvironmentSettings:
    base = environment(env)
    fields = {"id": "r1", "point_in_time": dt.datetime(2026, 11, 29, 7, 55, tzinfo=dt.UTC)}
    fields.update(restore)
    data = base.model_dump(mode="python", by_alias=True)
    data["database"]["restore"] = fields
    return EnvironmentSettings.model_validate(data)


def named(plan: Plan, type_: str, name: str) -> Resource:
    [found] = [r for r in plan.of_type(type_) if r.name == name]
    return found


def hosts(plan: Plan) -> set[str]:
    found = set()
    for task in plan.of_type("aws:ecs/taskDefinition:TaskDefinition"):
        for container in json.loads(task.inputs["containerDefinitions"]):
            found |= {e["value"] for e in container["environment"] if e["name"] == "DATABASE_HOST"}
    return found


@pytest.fixture(scope="module")
def live() -> dict[Cloud, Plan]:
    return {cloud: render(environment("production"), cloud) for cloud in Cloud}


@pytest.fixture(scope="module")
def restore_plans() -> dict[Cloud, Plan]:
    return {cloud: render(restored(), cloud) for cloud in Cloud}


def test_aws_restore_creates_a_new_instance_beside_the_live_one_and_switches(
    live: dict[Cloud, Plan], restore_plans: dict[Cloud, Plan]
) -> None:
    plan = restore_plans[Cloud.AWS]
    original = named(plan, RDS, "database-instance")
    new = named(plan, RDS, "database-restore-r1")
    assert original.inputs == named(live[Cloud.AWS], RDS, "database-instance").inputs
    assert original.protect is True
    assert new.inputs["identifier"] == "billing-production-r1"
    assert new.inputs["restoreToPointInTime"] == {
        "restoreTime": WHEN,
        "sourceDbInstanceIdentifier": "billing-production",
    }
    assert "snapshotIdentifier" not in new.inputs
    assert new.protect is True
    assert new.inputs["deletionProtection"] is True
    assert new.inputs["storageEncrypted"] is True
    assert new.inputs["multiAz"] is True
    # The services, the credentials and the replicas follow the restored instance.
    assert {h.split(".")[0] for h in hosts(plan)} == {"billing-production-r1"}
    assert {h.split(".")[0] for h in hosts(live[Cloud.AWS])} == {"billing-production"}
    replicas = [r for r in plan.of_type(RDS) if r.inputs.get("replicateSourceDb")]
    assert {r.inputs["replicateSourceDb"] for r in replicas} == {"billing-production-r1"}
    assert plan.outputs["database_address"].startswith("billing-production-r1.")
    # Its logs are encrypted log groups of its own, made before it.
    logs = [
        r for r in plan.of_type("aws:cloudwatch/logGroup:LogGroup") if "-r1/" in r.inputs["name"]
    ]
    assert len(logs) == 2
    assert {log.urn for log in logs} <= set(new.dependencies)


def test_gcp_restore_clones_the_point_in_time_beside_the_live_instance(
    restore_plans: dict[Cloud, Plan],
) -> None:
    plan = restore_plans[Cloud.GCP]
    original = named(plan, SQL, "database-instance")
    new = named(plan, SQL, "database-restore-r1")
    assert original.protect is True
    assert new.inputs["name"] == "billing-production-postgres-r1"
    assert new.inputs["clone"]["pointInTime"] == WHEN
    assert new.inputs["clone"]["sourceInstanceName"] == "billing-production-postgres"
    assert new.protect is True
    # A clone brings its database and user along: neither is declared on it again.
    for type_ in ("gcp:sql/database:Database", "gcp:sql/user:User"):
        assert len(plan.of_type(type_)) == 1
    assert plan.outputs["cloud_sql_connection_name"].endswith(":billing-production-postgres-r1")
    replicas = [r for r in plan.of_type(SQL) if r.inputs.get("masterInstanceName")]
    assert {r.inputs["masterInstanceName"] for r in replicas} == {"billing-production-postgres-r1"}


def test_restore_from_a_snapshot_or_backup() -> None:
    settings = restored(
        point_in_time=None,
        snapshot="rds:billing-production-2026-11-29-03-00",
        backup_id=1732851600000,
    )
    aws = named(render(settings, Cloud.AWS), RDS, "database-restore-r1")
    assert aws.inputs["snapshotIdentifier"] == "rds:billing-production-2026-11-29-03-00"
    assert "restoreToPointInTime" not in aws.inputs
    gcp = named(render(settings, Cloud.GCP), SQL, "database-restore-r1")
    assert gcp.inputs["restoreBackupContext"] == {
        "backupRunId": 1732851600000,
        "instanceId": "billing-production-postgres",
    }
    assert "clone" not in gcp.inputs


def test_restore_without_switch_leaves_the_services_on_the_live_instance() -> None:
    plan = render(restored(switch=False), Cloud.AWS)
    assert named(plan, RDS, "database-restore-r1")
    assert {h.split(".")[0] for h in hosts(plan)} == {"billing-production"}


def test_the_guard_sees_restore_and_switch_as_no_data_loss(
    live: dict[Cloud, Plan], restore_plans: dict[Cloud, Plan]
) -> None:
    for cloud in Cloud:
        diff = diff_plans(f"production-{cloud.value}", live[cloud], restore_plans[cloud])
        result = guard([diff], source="`main`")
        assert result.ok, result.blocked
        [(_, change)] = result.restores
        assert change.urn.endswith("database-restore-r1")
        assert "Restored beside the live database" in verdict(result).markdown


def test_releasing_then_removing_the_old_instance_is_the_destructive_step(
    restore_plans: dict[Cloud, Plan],
) -> None:
    released = {cloud: render(restored(original="release"), cloud) for cloud in Cloud}
    for cloud in Cloud:
        type_ = RDS if cloud is Cloud.AWS else SQL
        old = named(released[cloud], type_, "database-instance")
        # Step 1 (a pull request of its own): protection lifted; nothing deleted yet.
        assert old.protect is False
        assert old.inputs["deletionProtection"] is False
        step1 = guard(
            [diff_plans(f"production-{cloud.value}", restore_plans[cloud], released[cloud])]
        )
        assert step1.ok
        # The policy asks for a reviewed exemption while the old instance is unprotected.
        rules = {
            f.rule
            for f in evaluate_plan(released[cloud], environment("production"))
            if f.urn == old.urn
        }
        assert "protect-stateful-in-production" in rules

        # Step 2: the old instance goes; the guard stops it until it is allowed.
        removed = render(restored(original="remove"), cloud)
        assert not [r for r in removed.of_type(type_) if r.name == "database-instance"]
        diff = diff_plans(f"production-{cloud.value}", released[cloud], removed)
        blocked = guard([diff])
        assert not blocked.ok
        assert old.urn in {c.urn for _, c in blocked.blocked}
        assert guard([diff], allow=[c.urn for _, c in blocked.blocked]).ok


@pytest.mark.parametrize(
    ("restore", "key", "message"),
    [
        (
            {"point_in_time": "2026-11-29T07:55:00", "id": "r1"},
            "database.restore.point_in_time",
            "UTC offset",
        ),
        ({"id": "r1"}, "database.restore.snapshot", "needs snapshot"),
        ({"id": "r1", "snapshot": "s1"}, "database.restore.backup_id", "needs backup_id"),
        (
            {"id": "r1", "point_in_time": "2026-11-29T07:55:00Z", "snapshot": "s1"},
            "database.restore.point_in_time",
            "not both",
        ),
        (
            {
                "id": "r1",
                "point_in_time": "2026-11-29T07:55:00Z",
                "switch": False,
                "original": "remove",
            },
            "database.restore.original",
            "needs switch = true",
        ),
        ({"id": "R-1", "point_in_time": "2026-11-29T07:55:00Z"}, "database.restore.id", "pattern"),
    ],
)
def test_a_bad_restore_names_the_file_and_key(
    environments_copy: Path, restore: dict[str, str], key: str, message: str
) -> None:
    settings = environments_copy / "production" / "settings.toml"
    body = "\n".join(
        f"{k} = {v}" if k == "point_in_time" else f"{k} = {json.dumps(v)}"
        for k, v in restore.items()
    )
    settings.write_text(settings.read_text() + f"\n[database.restore]\n{body}\n")
    with pytest.raises(SettingsError) as error:
        load_environment("production", environments_copy)
    assert error.value.file.endswith("production/settings.toml")
    assert error.value.key == key
    assert message in error.value.message


def test_dr_drill_renders_a_restore_into_a_throwaway_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["dr-drill", "--env", "production", "--now", "2026-11-29T08:00:00Z", "--out", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAIL" not in out
    report = (tmp_path / "report.md").read_text()
    assert "Restore to 2026-11-29T07:55:00Z" in report
    assert "billing-aws/production-dr-drill" in report
    assert "billing-gcp/production-dr-drill" in report
    assert "Cost while both instances run" in report
    written = json.loads((tmp_path / "production-aws.json").read_text())
    assert written["stack"] == "billing-aws/production-dr-drill"
    # The drill costs a second primary while both run.
    result = drill.run(environment("production"), dt.datetime(2026, 11, 29, 8, tzinfo=dt.UTC))
    assert all(s.cost_delta > 0 for s in result.stacks)


def test_dr_drill_fails_when_a_check_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A program that forgot to switch the services: the drill must catch it.
    real = drill.with_restore

    def unswitched(env: EnvironmentSettings, when: dt.datetime) -> EnvironmentSettings:
        drilled = real(env, when)
        assert drilled.database.restore is not None
        restore = drilled.database.restore.model_copy(update={"switch": False})
        return drilled.model_copy(
            update={"database": drilled.database.model_copy(update={"restore": restore})}
        )

    monkeypatch.setattr(drill, "with_restore", unswitched)
    assert main(["dr-drill", "--out", str(tmp_path)]) == 1
    assert "| services switched | FAIL |" in (tmp_path / "report.md").read_text()
