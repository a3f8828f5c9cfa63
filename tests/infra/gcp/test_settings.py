"""GCP-specific settings: the Cloud Run floor, the domain, the image registry, sizing helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.gcp.compute import cpu_limit, memory_limit
from infra.gcp.database import max_connections
from infra.gcp.registry import upstream_registry
from infra.settings import SettingsError, environment, load_environment


def test_cloud_run_floor_is_zero_in_dev_while_ecs_keeps_min_tasks() -> None:
    api = environment("dev").services["api"]
    assert api.min_tasks == 1
    assert api.cloud_run_min_instances == 0
    production = environment("production").services["api"]
    assert production.min_instances is None
    assert production.cloud_run_min_instances == production.min_tasks == 2


def test_min_instances_above_max_tasks_names_the_file_and_key(environments_copy: Path) -> None:
    path = environments_copy / "staging" / "settings.toml"
    path.write_text(
        path.read_text().replace("[services.worker]\n", "[services.worker]\nmin_instances = 6\n")
    )
    with pytest.raises(SettingsError) as error:
        load_environment("staging", root=environments_copy)
    assert error.value.file.endswith("staging/settings.toml")
    assert error.value.key == "services.worker.min_instances"
    assert "greater than max_tasks 5" in error.value.message


def test_a_malformed_domain_names_the_file_and_key(environments_copy: Path) -> None:
    path = environments_copy / "dev" / "settings.toml"
    text = path.read_text().replace(
        'domain = "api.dev.billing.example.com"', 'domain = "https://api.example.com/"'
    )
    path.write_text(text)
    with pytest.raises(SettingsError) as error:
        load_environment("dev", root=environments_copy)
    assert error.value.key == "gcp.domain"
    assert error.value.file.endswith("dev/settings.toml")


def test_images_from_two_registries_name_the_pins_file(environments_copy: Path) -> None:
    path = environments_copy / "dev" / "pins.toml"
    path.write_text(
        path.read_text().replace("ghcr.io/example-org/billing-worker", "quay.io/example/worker")
    )
    settings = load_environment("dev", root=environments_copy)
    with pytest.raises(SettingsError) as error:
        upstream_registry(settings)
    assert error.value.file == "environments/dev/pins.toml"
    assert error.value.key == "images.worker"
    assert upstream_registry(environment("dev")) == "ghcr.io"


@pytest.mark.parametrize(
    ("tier", "connections"),
    [
        ("db-custom-1-3840", 100),
        ("db-custom-2-7680", 400),
        ("db-custom-4-15360", 500),
        ("db-custom-1-1024", 25),
        ("db-custom-32-131072", 1000),
    ],
)
def test_max_connections_follow_instance_memory(tier: str, connections: int) -> None:
    assert max_connections(tier) == connections


@pytest.mark.parametrize(
    ("units", "mib", "cpu", "memory"),
    [(256, 512, "1", "512Mi"), (512, 256, "1", "512Mi"), (2048, 4096, "2", "4096Mi")],
)
def test_cloud_run_limits_from_fargate_sizes(units: int, mib: int, cpu: str, memory: str) -> None:
    assert cpu_limit(units) == cpu
    assert memory_limit(mib) == memory
