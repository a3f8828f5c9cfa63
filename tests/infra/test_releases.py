"""Releases per environment: production blue/green with a bake time and rollback on alarms
(ECS native blue/green behind the ALB), dev and staging rolling."""

from __future__ import annotations

import re

import pytest

from infra.plans.produce.offline import render
from infra.plans.read.model import Plan, Resource
from infra.settings import Cloud, EnvironmentSettings, environment

SERVICE = "aws:ecs/service:Service"
RULE = "aws:lb/listenerRule:ListenerRule"
GROUP = "aws:lb/targetGroup:TargetGroup"


@pytest.fixture(scope="module")
def plans() -> dict[str, Plan]:
    return {env: render(environment(env), Cloud.AWS) for env in ("dev", "staging", "production")}


def named(plan: Plan, type_: str, name: str) -> Resource:
    [found] = [r for r in plan.of_type(type_) if r.name == name]
    return found


def arn_of(plan: Plan, resource: Resource) -> str:
    """The ARN the offline runtime gave ``resource``, as another resource's input shows it."""
    return next(
        value
        for r in plan.resources
        for value in _strings(r.inputs)
        if value.startswith("arn:") and re.search(rf"[/:]{resource.name}-[0-9a-f]{{7}}(/|$)", value)
    )


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def test_production_releases_blue_green_with_bake_time_and_alarm_rollback(
    plans: dict[str, Plan],
) -> None:
    plan = plans["production"]
    api = named(plan, SERVICE, "compute-api-service")
    assert api.inputs["deploymentConfiguration"] == {
        "strategy": "BLUE_GREEN",
        "bakeTimeInMinutes": str(environment("production").release.bake_minutes),
    }
    assert environment("production").release.bake_minutes == 15
    [balancer] = api.inputs["loadBalancers"]
    advanced = balancer["advancedConfiguration"]
    blue, green = named(plan, GROUP, "edge-api-tg"), named(plan, GROUP, "edge-api-tg-alt")
    assert balancer["targetGroupArn"] == arn_of(plan, blue)
    assert advanced["alternateTargetGroupArn"] == arn_of(plan, green)
    # Both groups answer the same port and health path: either can take the traffic.
    for key in ("port", "protocol", "targetType", "healthCheck"):
        assert blue.inputs[key] == green.inputs[key]
    rule = named(plan, RULE, "edge-api-route")
    assert advanced["productionListenerRule"] == arn_of(plan, rule)
    assert rule.inputs["priority"] == 50000
    assert rule.inputs["conditions"][0]["pathPattern"]["values"] == ["/*"]
    role = named(plan, "aws:iam/role:Role", "compute-blue-green-role")
    assert advanced["roleArn"] == arn_of(plan, role)
    assert "ecs.amazonaws.com" in role.inputs["assumeRolePolicy"]
    assert role.inputs["managedPolicyArns"] == [
        "arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForLoadBalancers"
    ]
    # Rollback on alarms that exist in the same stack.
    alarms = api.inputs["alarms"]
    assert alarms["enable"] is True
    assert alarms["rollback"] is True
    defined = {a.inputs["name"] for a in plan.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert set(alarms["alarmNames"]) <= defined
    assert "billing-production-alb-5xx-rate" in alarms["alarmNames"]
    assert api.inputs["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}


def test_the_worker_has_no_traffic_to_shift(plans: dict[str, Plan]) -> None:
    worker = named(plans["production"], SERVICE, "compute-worker-service")
    assert "deploymentConfiguration" not in worker.inputs
    assert worker.inputs["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}


@pytest.mark.parametrize("env", ["dev", "staging"])
def test_other_environments_roll(plans: dict[str, Plan], env: str) -> None:
    plan = plans[env]
    assert environment(env).release.strategy == "rolling"
    api = named(plan, SERVICE, "compute-api-service")
    assert "deploymentConfiguration" not in api.inputs  # ECS's default: ROLLING
    assert "alarms" not in api.inputs
    assert "advancedConfiguration" not in api.inputs["loadBalancers"][0]
    assert [g.name for g in plan.of_type(GROUP)] == ["edge-api-tg"]
    assert plan.of_type(RULE) == []
    assert api.inputs["deploymentMinimumHealthyPercent"] == 100
    assert api.inputs["deploymentMaximumPercent"] == 200


RUN = "gcp:cloudrunv2/service:Service"


def _release(**fields: object) -> EnvironmentSettings:
    production = environment("production")
    return production.model_copy(update={"release": production.release.model_copy(update=fields)})


def test_cloud_run_names_each_release_and_sends_it_all_traffic_by_default() -> None:
    plan = render(environment("production"), Cloud.GCP)
    api = named(plan, RUN, "workloads-api")
    assert api.inputs["template"]["revision"] == "billing-production-api-0-1-0"
    assert api.inputs["traffics"] == [
        {
            "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
            "revision": "billing-production-api-0-1-0",
            "percent": 100,
        }
    ]
    dev = named(render(environment("dev"), Cloud.GCP), RUN, "workloads-api")
    assert "traffics" not in dev.inputs  # rolling: the latest ready revision serves
    assert "revision" not in dev.inputs["template"]


def test_cloud_run_blue_green_splits_traffic_between_named_revisions() -> None:
    plan = render(_release(serving={"api": "0.0.9"}, candidate_percent=10), Cloud.GCP)
    traffic = named(plan, RUN, "workloads-api").inputs["traffics"]
    assert [(t["revision"], t["percent"], t["tag"]) for t in traffic] == [
        ("billing-production-api-0-0-9", 90, "blue"),
        ("billing-production-api-0-1-0", 10, "green"),
    ]
    assert sum(t["percent"] for t in traffic) == 100
