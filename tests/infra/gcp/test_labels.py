"""Every GCP resource that takes labels carries the required ones, in every environment."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

from infra.plans.produce.offline import render
from infra.plans.read.model import Plan, Resource
from infra.settings import Cloud, environment
from infra.tagging import REQUIRED_LABELS

# The input that holds a type's resource labels, preferred in this order. NotificationChannel's
# `labels` are its channel settings (the e-mail address); its resource labels are user_labels.
LABEL_INPUTS = (
    ("user_labels", "userLabels"),
    ("resource_labels", "resourceLabels"),
    ("labels", "labels"),
)
# Types whose labels sit below the top level.
NESTED = {"gcp:sql/databaseInstance:DatabaseInstance": ("settings", "userLabels")}


@pytest.fixture(scope="module", params=["dev", "staging", "production"])
def plan(request: pytest.FixtureRequest) -> Plan:
    return render(environment(request.param), Cloud.GCP)


def label_path(type_: str) -> tuple[str, ...] | None:
    """Where a type's labels are in its inputs, or None if its class takes no labels."""
    if type_ in NESTED:
        return NESTED[type_]
    _, path, cls = type_.split(":")
    module = path.partition("/")[0]
    resource_class = getattr(importlib.import_module(f"pulumi_gcp.{module}"), cls)
    parameters = set(inspect.signature(resource_class._internal_init).parameters)
    return next(((key,) for param, key in LABEL_INPUTS if param in parameters), None)


def labels_of(resource: Resource, path: tuple[str, ...]) -> Any:
    value: Any = resource.inputs
    for key in path:
        value = value.get(key, {}) if isinstance(value, dict) else {}
    return value


def test_every_labelable_resource_carries_the_required_labels(plan: Plan) -> None:
    checked: set[str] = set()
    for resource in plan.resources:
        if not resource.custom or not resource.type.startswith("gcp:"):
            continue
        path = label_path(resource.type)
        if path is None:
            continue
        found = labels_of(resource, path)
        missing = [key for key in REQUIRED_LABELS if key not in found]
        assert not missing, f"{resource.urn} lacks {missing}"
        assert found["environment"] == plan.environment
        assert found["managed-by"] == "pulumi"
        checked.add(resource.type)
    # Not vacuous: the stateful and public resources are among those checked.
    assert {
        "gcp:sql/databaseInstance:DatabaseInstance",
        "gcp:redis/instance:Instance",
        "gcp:secretmanager/secret:Secret",
        "gcp:kms/cryptoKey:CryptoKey",
        "gcp:artifactregistry/repository:Repository",
        "gcp:cloudrunv2/service:Service",
        "gcp:cloudrunv2/workerPool:WorkerPool",
        "gcp:cloudrunv2/job:Job",
        "gcp:compute/globalForwardingRule:GlobalForwardingRule",
        "gcp:compute/securityPolicy:SecurityPolicy",
        "gcp:monitoring/alertPolicy:AlertPolicy",
        "gcp:monitoring/notificationChannel:NotificationChannel",
        "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig",
    } <= checked


def test_the_check_finds_a_resource_without_labels(plan: Plan) -> None:
    redis = next(r for r in plan.resources if r.type == "gcp:redis/instance:Instance")
    path = label_path(redis.type)
    assert path == ("labels",)
    stripped = Resource(**{**redis.__dict__, "inputs": {**redis.inputs, "labels": {}}})
    assert [key for key in REQUIRED_LABELS if key not in labels_of(stripped, path)] == list(
        REQUIRED_LABELS
    )


def test_the_provider_applies_the_labels_by_default(plan: Plan) -> None:
    provider = next(r for r in plan.resources if r.type == "pulumi:providers:gcp")
    default_labels = provider.inputs["defaultLabels"]
    if isinstance(default_labels, str):  # providers receive nested inputs as JSON text
        import json

        default_labels = json.loads(default_labels)
    assert set(REQUIRED_LABELS) <= set(default_labels)
