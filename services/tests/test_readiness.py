"""/ready reports each dependency; /health (the load balancer's) fails with the database only."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from services import devservers
from services.api.app import create_app
from services.billing.config import Settings
from services.tests.conftest import serving


@pytest.mark.parametrize("unreachable", ["database", "redis"])
def test_ready_fails_when_a_dependency_is_unreachable(settings: Settings, unreachable: str) -> None:
    closed_port = devservers.free_port()
    if unreachable == "database":
        broken = dataclasses.replace(
            settings, database=dataclasses.replace(settings.database, port=closed_port)
        )
    else:
        broken = dataclasses.replace(
            settings, cache=dataclasses.replace(settings.cache, port=closed_port)
        )
    with serving(create_app(broken.for_api())) as url:
        health = httpx.get(f"{url}/health", timeout=30)
        response = httpx.get(f"{url}/ready", timeout=30)
    # Without its database a task can serve nothing; without Redis it serves everything.
    assert health.status_code == (503 if unreachable == "database" else 200)
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks[unreachable] == "unreachable"
    assert [name for name, state in checks.items() if state == "ok"] == [
        name for name in ("database", "redis") if name != unreachable
    ]
