"""Read replicas: a count per environment, in other zones, alarmed, and a read-only endpoint."""

from __future__ import annotations

import json

import pytest

from infra.cost.estimate import estimate
from infra.manifests import ServiceManifest, ValueSource, manifests
from infra.plans.judge.guard import guard
from infra.plans.produce.offline import render
from infra.plans.read.diff import diff_plans
from infra.plans.read.model import Plan, Resource
from infra.policy.runner import evaluate_plan
from infra.settings import Cloud, environment

RDS = "aws:rds/instance:Instance"
SQL = "gcp:sql/databaseInstance:DatabaseInstance"
REPLICAS = {"dev": 0, "staging": 1, "production": 2}


def _with_read_host() -> dict[str, ServiceManifest]:
    """The shipped manifests, the API naming the read-only endpoint as a service would."""
    services = dict(manifests())
    api = services["api"]
    environment_ = {**api.environment, "DATABASE_READ_HOST": ValueSource.DATABASE_READ_HOST}
    services["api"] = api.model_copy(update={"environment": environment_})
    return services


@pytest.fixture(scope="module")
def plans() -> dict[tuple[str, Cloud], Plan]:
    return {
        (env, cloud): render(environment(env), cloud, _with_read_host())
        for env in REPLICAS
        for cloud in Cloud
    }


def _replicas(plan: Plan, type_: str) -> list[Resource]:
    return sorted((r for r in plan.of_type(type_) if "-replica-" in r.name), key=lambda r: r.name)


@pytest.mark.parametrize("env", REPLICAS)
def test_aws_replicas_follow_the_serving_instance_in_other_zones(
    plans: dict[tuple[str, Cloud], Plan], env: str
) -> None:
    plan = plans[env, Cloud.AWS]
    primary = next(r for r in plan.of_type(RDS) if r.name == "database-instance")
    replicas = _replicas(plan, RDS)
    assert len(replicas) == REPLICAS[env] == environment(env).database.read_replicas
    zones = [r.inputs["availabilityZone"] for r in replicas]
    assert len(set(zones)) == len(zones)
    assert "us-east-1a" not in zones  # the first zone is left to the primary's side
    for replica in replicas:
        assert replica.inputs["replicateSourceDb"] == primary.inputs["identifier"]
        assert replica.inputs["storageEncrypted"] is True
        assert replica.inputs["publiclyAccessible"] is False
        assert replica.inputs["backupRetentionPeriod"] == 0
        assert replica.protect is False
        assert primary.urn in replica.dependencies


@pytest.mark.parametrize("env", REPLICAS)
def test_gcp_replicas_are_zonal_without_backups_in_other_zones(
    plans: dict[tuple[str, Cloud], Plan], env: str
) -> None:
    plan = plans[env, Cloud.GCP]
    primary = next(r for r in plan.of_type(SQL) if r.name == "database-instance")
    replicas = _replicas(plan, SQL)
    assert len(replicas) == REPLICAS[env]
    zones = [r.inputs["settings"]["locationPreference"]["zone"] for r in replicas]
    assert len(set(zones)) == len(zones)
    assert all(zone.startswith("us-central1-") and zone != "us-central1-a" for zone in zones)
    for replica in replicas:
        assert replica.inputs["masterInstanceName"] == primary.inputs["name"]
        assert replica.inputs["settings"]["availabilityType"] == "ZONAL"
        assert replica.inputs["settings"]["backupConfiguration"]["enabled"] is False
        assert replica.inputs["encryptionKeyName"] == primary.inputs["encryptionKeyName"]
        assert replica.inputs["settings"]["ipConfiguration"]["ipv4Enabled"] is False


@pytest.mark.parametrize("env", REPLICAS)
def test_each_replica_has_its_own_lag_and_cpu_alarms(
    plans: dict[tuple[str, Cloud], Plan], env: str
) -> None:
    aws = plans[env, Cloud.AWS]
    identifiers = {r.inputs["identifier"] for r in _replicas(aws, RDS)}
    alarmed: dict[str, set[str]] = {}
    for alarm in aws.of_type("aws:cloudwatch/metricAlarm:MetricAlarm"):
        dimension = (alarm.inputs.get("dimensions") or {}).get("DBInstanceIdentifier")
        if isinstance(dimension, str) and dimension in identifiers:
            alarmed.setdefault(dimension, set()).add(alarm.inputs["metricName"])
            assert alarm.inputs["alarmActions"]
    assert alarmed == {i: {"ReplicaLag", "CPUUtilization"} for i in identifiers}

    gcp = plans[env, Cloud.GCP]
    names = [r.inputs["name"] for r in _replicas(gcp, SQL)]
    filters = [
        p.inputs["conditions"][0]["conditionThreshold"]["filter"]
        for p in gcp.of_type("gcp:monitoring/alertPolicy:AlertPolicy")
    ]
    for name in names:
        watched = [f for f in filters if f.endswith(f':{name}"')]
        assert len(watched) == 2, name
        assert any("replication/replica_lag" in f for f in watched)


@pytest.mark.parametrize("env", REPLICAS)
def test_services_get_a_read_only_endpoint(plans: dict[tuple[str, Cloud], Plan], env: str) -> None:
    aws = plans[env, Cloud.AWS]
    replicas = [r.inputs["identifier"] for r in _replicas(aws, RDS)]
    task = next(
        r
        for r in aws.of_type("aws:ecs/taskDefinition:TaskDefinition")
        if r.name.endswith("api-task")
    )
    [container] = json.loads(task.inputs["containerDefinitions"])
    values = {e["name"]: e["value"] for e in container["environment"]}
    hosts = values["DATABASE_READ_HOST"].split(",")
    if replicas:
        assert [h.split(".")[0] for h in hosts] == replicas
    else:  # no replica: reads go to the instance that serves writes
        assert hosts == [values["DATABASE_HOST"]]

    gcp = plans[env, Cloud.GCP]
    api = next(r for r in gcp.of_type("gcp:cloudrunv2/service:Service") if r.name.endswith("api"))
    envs = {e["name"]: e.get("value") for e in api.inputs["template"]["containers"][0]["envs"]}
    assert len(envs["DATABASE_READ_HOST"].split(",")) == max(1, REPLICAS[env])
    assert envs["DATABASE_HOST"] not in envs["DATABASE_READ_HOST"].split(",") or not REPLICAS[env]


def test_replicas_are_priced_like_instances_of_their_source_size(
    plans: dict[tuple[str, Cloud], Plan],
) -> None:
    lines = estimate(plans["production", Cloud.AWS]).lines
    replica_lines = [x for x in lines if x.name.startswith("database-replica-")]
    primary = next(x for x in lines if x.name == "database-instance")
    assert len(replica_lines) == 2
    for line in replica_lines:
        assert line.description.startswith("RDS read replica")
        assert "100 GB" in line.description
        # Single-AZ: half the Multi-AZ primary of the same class and storage.
        assert line.monthly == pytest.approx((primary.monthly or 0) / 2)
    gcp_lines = estimate(plans["production", Cloud.GCP]).lines
    assert sum(1 for x in gcp_lines if x.description.startswith("Cloud SQL read replica")) == 2


def test_replicas_pass_the_production_policy(plans: dict[tuple[str, Cloud], Plan]) -> None:
    for cloud in Cloud:
        findings = evaluate_plan(plans["production", cloud], environment("production"))
        failing = [(f.rule, f.urn) for f in findings if "-replica-" in f.urn]
        assert failing == [], failing


def test_dropping_a_replica_is_not_a_data_loss(plans: dict[tuple[str, Cloud], Plan]) -> None:
    before = plans["production", Cloud.AWS]
    after = render(
        environment("production").model_copy(
            update={
                "database": environment("production").database.model_copy(
                    update={"read_replicas": 1}
                )
            }
        ),
        Cloud.AWS,
        _with_read_host(),
    )
    diff = diff_plans("production-aws", before, after)
    [deleted] = [c for c in diff.changes if c.op == "delete" and c.type == RDS]
    assert deleted.urn.endswith("database-replica-2")
    assert deleted.replica
    assert not deleted.stateful
    assert guard([diff]).ok
