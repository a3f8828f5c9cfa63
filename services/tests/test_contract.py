"""The contract between the API and its infrastructure, read from the rendered dev plan.

The dev plan is rendered offline; the API's container definition gives the port and the names
of every environment variable and secret, the target group gives the health path. The API then
starts with exactly those variables (values pointed at the local servers) and must answer 200.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.plans.produce.offline import render
from infra.settings import Cloud, environment
from services.devservers import free_port
from services.tests.processes import start_service, stop, wait_until_serving

pytestmark = pytest.mark.slow


def _container(plan_resources: list[Any], task_name: str) -> dict[str, Any]:
    task = next(
        r
        for r in plan_resources
        if r.type == "aws:ecs/taskDefinition:TaskDefinition" and r.name == task_name
    )
    definitions: list[dict[str, Any]] = json.loads(task.inputs["containerDefinitions"])
    return definitions[0]


def test_api_starts_from_the_dev_plan_and_answers_its_health_path(
    service_env: dict[str, str], migrated: None, tmp_path: Path
) -> None:
    del migrated
    plan = render(environment("dev"), Cloud.AWS)
    container = _container(plan.resources, "compute-api-task")
    [mapping] = container["portMappings"]
    port = int(mapping["containerPort"])
    names = [e["name"] for e in container["environment"]] + [
        s["name"] for s in container["secrets"]
    ]
    [target_group] = plan.of_type("aws:lb/targetGroup:TargetGroup")
    health_path = target_group.inputs["healthCheck"]["path"]
    assert target_group.inputs["port"] == port

    # The service listens where the plan routes traffic.
    planned = {e["name"]: e["value"] for e in container["environment"]}
    assert planned["BILLING_PORT"] == str(port)

    # Only the names the plan provides, their values pointed at the local servers (and a free
    # local port in place of the container's).
    missing = [name for name in names if name not in service_env]
    assert not missing, f"the plan names variables the local servers cannot fill: {missing}"
    env = {name: service_env[name] for name in names}
    env["BILLING_HOST"] = "127.0.0.1"
    # Optional, and in no manifest: a free port here, not the default another run may hold.
    env["BILLING_INTERNAL_PORT"] = str(free_port())
    env["PATH"] = os.environ["PATH"]
    log = tmp_path / "api.log"
    process = start_service("services.api", env, log=log)
    try:
        url = f"http://127.0.0.1:{env['BILLING_PORT']}"
        wait_until_serving(url, process, log)
        assert httpx.get(f"{url}{health_path}", timeout=5).status_code == 200
        ready = container["healthCheck"]["command"]
        assert f":{port}{health_path}" in " ".join(ready)  # the container's own check agrees
    finally:
        stop(process)
