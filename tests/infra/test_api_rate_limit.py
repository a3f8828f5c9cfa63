"""The API's rate limit is an environment setting: environments/<env> to the ECS task and the
Cloud Run service as BILLING_RATE_LIMIT_PER_MINUTE; a bad value names its file and key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from infra.manifests import manifests
from infra.plans.produce.offline import render
from infra.plans.read.model import Plan
from infra.settings import Cloud, SettingsError, load_environment

SHIPPED = Path(__file__).parents[2] / "environments"
VARIABLE = "BILLING_RATE_LIMIT_PER_MINUTE"


def _environments(tmp_path: Path, production_extra: str) -> Path:
    environments = tmp_path / "environments"
    shutil.copytree(SHIPPED, environments)
    settings = environments / "production" / "settings.toml"
    settings.write_text(settings.read_text() + production_extra)
    return environments


def _api_values(plan: Plan) -> dict[str, str]:
    if plan.cloud == Cloud.AWS:
        [task] = [
            r
            for r in plan.of_type("aws:ecs/taskDefinition:TaskDefinition")
            if r.name.endswith("api-task")
        ]
        [container] = json.loads(task.inputs["containerDefinitions"])
        return {e["name"]: e["value"] for e in container["environment"]}
    [service] = [
        r for r in plan.of_type("gcp:cloudrunv2/service:Service") if r.name.endswith("api")
    ]
    envs = service.inputs["template"]["containers"][0]["envs"]
    return {e["name"]: e["value"] for e in envs if "value" in e}


def test_the_shared_default_reaches_every_environment() -> None:
    for name in ("dev", "staging", "production"):
        assert load_environment(name).api.rate_limit_per_minute == 600


@pytest.mark.parametrize("cloud", list(Cloud))
def test_an_environment_override_reaches_the_api_container(tmp_path: Path, cloud: Cloud) -> None:
    environments = _environments(tmp_path, "\n[api]\nrate_limit_per_minute = 2400\n")
    production = load_environment("production", environments)
    assert production.api.rate_limit_per_minute == 2400
    assert _api_values(render(production, cloud, manifests()))[VARIABLE] == "2400"
    # Other environments keep the shared default.
    staging = load_environment("staging", environments)
    assert _api_values(render(staging, cloud, manifests()))[VARIABLE] == "600"


def test_the_worker_does_not_get_the_api_rate_limit() -> None:
    assert VARIABLE in manifests()["api"].environment
    assert VARIABLE not in manifests()["worker"].environment


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "greater than or equal to 1"),
        ("1000001", "less than or equal to 1000000"),
        ('"600"', "valid integer"),
    ],
)
def test_a_bad_rate_limit_names_its_file_and_key(tmp_path: Path, value: str, message: str) -> None:
    environments = _environments(tmp_path, f"\n[api]\nrate_limit_per_minute = {value}\n")
    with pytest.raises(SettingsError) as raised:
        load_environment("production", environments)
    text = str(raised.value)
    assert "production/settings.toml" in text
    assert "api.rate_limit_per_minute" in text
    assert message in text
