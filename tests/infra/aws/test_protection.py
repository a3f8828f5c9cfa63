"""Data-loss guards, tags and secret handling of the rendered AWS stacks."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

from infra.plans.produce.mocks import COMPUTED, NewResource, RecordingMonitor, Target
from infra.plans.produce.offline import render
from infra.plans.read.model import SECRET, Plan
from infra.plans.read.stateful import STATEFUL_TYPES, is_replica
from infra.settings import Cloud, environment
from infra.tagging import REQUIRED_TAGS

ENVIRONMENTS = ("dev", "staging", "production")
# The stateful kinds the platform must hold, so the protect check below is never vacuous.
EXPECTED_STATEFUL = {
    "aws:rds/instance:Instance",
    "aws:elasticache/replicationGroup:ReplicationGroup",
    "aws:s3/bucket:Bucket",
    "aws:kms/key:Key",
    "aws:secretsmanager/secret:Secret",
    "aws:secretsmanager/secretVersion:SecretVersion",
    "aws:cloudwatch/logGroup:LogGroup",
}


@pytest.fixture(scope="module")
def retained(monkeypatch_module: pytest.MonkeyPatch) -> dict[str, Any]:
    """Render production once, recording each resource's retainOnDelete as the engine sees it."""
    seen: dict[str, bool] = {}
    original = RecordingMonitor.RegisterResource

    def register(self: RecordingMonitor, request: Any) -> Any:
        seen[f"{request.type}::{request.name}"] = bool(request.retainOnDelete)
        return original(self, request)

    monkeypatch_module.setattr(RecordingMonitor, "RegisterResource", register)
    plan = render(environment("production"), Cloud.AWS)
    # A copy: later renders (dev, staging) register the same names.
    return {"plan": plan, "retain": dict(seen)}


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def plans(retained: dict[str, Any]) -> dict[str, Plan]:
    rendered: dict[str, Plan] = {"production": retained["plan"]}
    for env in ("dev", "staging"):
        rendered[env] = render(environment(env), Cloud.AWS)
    return rendered


def test_production_protects_every_stateful_resource(plans: dict[str, Plan]) -> None:
    plan = plans["production"]
    stateful = [r for r in plan.resources if r.type in STATEFUL_TYPES]
    assert {r.type for r in stateful} >= EXPECTED_STATEFUL
    # Read replicas are rebuilt from their source: the one stateful kind left unprotected.
    unprotected = [r.urn for r in stateful if not r.protect and not is_replica(r.type, r.inputs)]
    assert unprotected == []


@pytest.mark.parametrize("env", ["dev", "staging"])
def test_other_environments_can_be_torn_down(plans: dict[str, Plan], env: str) -> None:
    assert [r.urn for r in plans[env].resources if r.protect] == []


def test_replacements_leave_keys_database_and_backups_behind(retained: dict[str, Any]) -> None:
    retain: dict[str, bool] = retained["retain"]
    for key in (
        "aws:kms/key:Key::keys-data",
        "aws:kms/key:Key::keys-logs",
        "aws:rds/instance:Instance::database-instance",
        "aws:s3/bucket:Bucket::backups-bucket",
    ):
        assert retain[key] is True, key
    # Rebuildable things are not retained: a retained ALB would only cost money.
    assert retain["aws:lb/loadBalancer:LoadBalancer::edge-alb"] is False


def test_service_level_protections_in_production(plans: dict[str, Plan]) -> None:
    plan = plans["production"]
    [db] = [r for r in plan.of_type("aws:rds/instance:Instance") if r.name == "database-instance"]
    assert db.inputs["deletionProtection"] is True
    assert db.inputs["finalSnapshotIdentifier"]
    [redis] = plan.of_type("aws:elasticache/replicationGroup:ReplicationGroup")
    assert redis.inputs["finalSnapshotIdentifier"]
    for bucket in plan.of_type("aws:s3/bucket:Bucket"):
        assert bucket.inputs["forceDestroy"] is False
    for repository in plan.of_type("aws:ecr/repository:Repository"):
        assert repository.inputs["forceDelete"] is False
    for secret in plan.of_type("aws:secretsmanager/secret:Secret"):
        assert secret.inputs["recoveryWindowInDays"] == 30


def _accepts_tags(type_: str) -> bool:
    package, module_and_kind = type_.split(":", 1)
    if package != "aws":
        return False
    module, kind = module_and_kind.split(":")
    module = module.split("/")[0]
    python_module = importlib.import_module(
        "pulumi_aws" if module == "index" else f"pulumi_aws.{module}"
    )
    cls = getattr(python_module, kind)
    return "tags" in inspect.signature(cls._internal_init).parameters


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_taggable_resource_carries_the_required_tags(
    plans: dict[str, Plan], env: str
) -> None:
    plan = plans[env]
    taggable = [r for r in plan.resources if r.custom and _accepts_tags(r.type)]
    assert len(taggable) > 50
    for resource in taggable:
        tags = resource.inputs.get("tags", {})
        missing = [key for key in REQUIRED_TAGS if key not in tags]
        assert missing == [], f"{resource.urn} lacks {missing}"
        assert tags["environment"] == env


def _generated(plan: Plan, urn: str, inputs: dict[str, Any]) -> str:
    """The value the offline runtime gave a generated password: what a leak would show."""
    type_ = "random:index/randomPassword:RandomPassword"
    target = Target(plan.environment, plan.cloud, "us-east-1", "000000000000")
    name = urn.rsplit("::", 1)[1]
    value: str = COMPUTED[type_](NewResource(type_, name, urn, inputs, target))["result"]
    return value


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_generated_passwords_never_appear_in_plain_text(plans: dict[str, Plan], env: str) -> None:
    plan = plans[env]
    passwords = plan.of_type("random:index/randomPassword:RandomPassword")
    assert len(passwords) == 3  # database, Redis auth token, JWT secret
    text = plan.to_json()
    for password in passwords:
        value = _generated(plan, password.urn, password.inputs)
        assert len(value) >= 16
        assert value not in text, password.urn
    [db] = [r for r in plan.of_type("aws:rds/instance:Instance") if r.name == "database-instance"]
    assert db.inputs["password"] == SECRET
    [redis] = plan.of_type("aws:elasticache/replicationGroup:ReplicationGroup")
    assert redis.inputs["authToken"] == SECRET
    versions = plan.of_type("aws:secretsmanager/secretVersion:SecretVersion")
    assert len(versions) == 6  # the five platform secrets and the image cache's credentials
    assert all(v.inputs["secretString"] == SECRET for v in versions)
