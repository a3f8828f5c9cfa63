"""Real PostgreSQL 15 and Redis 7 on 127.0.0.1 for the whole session; a clean slate per test."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from services import devservers
from services.api.app import create_app
from services.api.ratelimit import RateLimit
from services.api.security import mint_token
from services.billing.config import JwtSettings, Settings
from services.billing.db import create_database_engine, session_factory
from services.billing.gateway import SimulatorGateway
from services.billing.models import Base

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
Result = TypeVar("Result")
# Obviously fake values; nothing here protects anything.
JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"
WEBHOOK_SECRET = "whsec_test_0123456789abcdef"
DATABASE_PASSWORD = "test-database-password"
REDIS_AUTH_TOKEN = "test-redis-auth-token"
# The API's BILLING_RATE_LIMIT_PER_MINUTE here: high enough that no test but the rate limit's
# own comes near it.
TEST_RATE_LIMIT = RateLimit(requests=10_000)


@dataclass(frozen=True)
class Servers:
    postgres: devservers.PostgresServer
    redis: devservers.RedisServer


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    base = devservers.scratch_dir("billing-tests-")
    postgres = devservers.start_postgres(base / "postgres", password=DATABASE_PASSWORD)
    try:
        cache = devservers.start_redis(base / "redis", auth_token=REDIS_AUTH_TOKEN)
    except BaseException:
        postgres.stop()
        raise
    try:
        yield Servers(postgres=postgres, redis=cache)
    finally:
        cache.stop()
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def service_env(servers: Servers) -> dict[str, str]:
    """The variables the manifests declare, filled for the test servers."""
    return {
        "BILLING_ENVIRONMENT": "test",
        "DATABASE_HOST": servers.postgres.host,
        "DATABASE_PORT": str(servers.postgres.port),
        "DATABASE_NAME": servers.postgres.database,
        "DATABASE_USER": servers.postgres.user,
        "DATABASE_PASSWORD": servers.postgres.password,
        "REDIS_HOST": servers.redis.host,
        "REDIS_PORT": str(servers.redis.port),
        "REDIS_TLS": "false",
        "REDIS_AUTH_TOKEN": servers.redis.auth_token,
        "PAYMENT_GATEWAY": "simulator",
        "STRIPE_API_KEY": "",
        "JWT_SECRET": JWT_SECRET,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BILLING_PORT": str(devservers.free_port()),
        "BILLING_RATE_LIMIT_PER_MINUTE": str(TEST_RATE_LIMIT.requests),
    }


def subprocess_env(service_env: dict[str, str], **overrides: str) -> dict[str, str]:
    """The test process's environment plus the service variables, for `python -m ...`."""
    return {**os.environ, **service_env, **overrides}


@pytest.fixture(scope="session")
def settings(service_env: dict[str, str]) -> Settings:
    return Settings.from_env(service_env)


@pytest.fixture(scope="session")
def migrated(service_env: dict[str, str]) -> None:
    """Migrate exactly as the release task does: the manifest's command, from the repo root."""
    alembic = Path(sys.executable).with_name("alembic")
    subprocess.run(
        [str(alembic), "-c", "services/billing/alembic.ini", "upgrade", "head"],
        cwd=REPOSITORY_ROOT,
        env=subprocess_env(service_env),
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="session")
def engine(settings: Settings, migrated: None) -> Iterator[Engine]:
    del migrated
    database_engine = create_database_engine(settings.database)
    yield database_engine
    database_engine.dispose()


@pytest.fixture(scope="session")
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture(scope="session")
def cache(servers: Servers) -> Iterator[redis.Redis]:
    client = servers.redis.client()
    yield client
    client.close()


@pytest.fixture
def clean(engine: Engine, cache: redis.Redis) -> None:
    """Empty every table and the cache, so no test sees another's data."""
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    cache.flushdb()


@pytest.fixture
def db(sessions: sessionmaker[Session], clean: None) -> Iterator[Session]:
    del clean
    with sessions() as session:
        yield session


@pytest.fixture
def simulator(cache: redis.Redis) -> SimulatorGateway:
    return SimulatorGateway(cache)


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, span: timedelta) -> None:
        self.now += span


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2025, 1, 31, 12, 0, tzinfo=UTC))


def run_async(main: Coroutine[Any, Any, Result]) -> Result:
    """asyncio.run(main), but the thread's event loop is left as it was.

    asyncio.run ends by setting the thread's loop to None, and Pulumi's runtime (the offline
    render some tests call later in the same process) then finds none: it asks for the thread's
    loop with get_event_loop(). A Runner given a loop factory neither sets nor unsets it
    (asyncio/runners.py, Runner._lazy_init and Runner.close).
    """
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(main)


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """A real uvicorn server for the app on a free loopback port, in a thread of this process."""
    port = devservers.free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def api_url(settings: Settings, engine: Engine) -> Iterator[str]:
    del engine  # Requested for the migrations.
    with serving(create_app(settings.for_api())) as url:
        yield url


TEST_JWT = JwtSettings(secret=JWT_SECRET)


def bearer_token(
    tenant: str = "merchant-1",
    *,
    scopes: str = "admin",
    lifetime: timedelta = timedelta(hours=1),
    subject: str = "tester",
) -> str:
    """A token for the test API; each tenant is a separate merchant."""
    return mint_token(TEST_JWT, tenant=tenant, subject=subject, scopes=scopes, lifetime=lifetime)


class BillingClient(httpx.Client):
    """An httpx client that authenticates and sends a fresh Idempotency-Key with each POST."""

    _keys = 0

    def post_new(self, url: str, json: object = None) -> httpx.Response:
        BillingClient._keys += 1
        return self.post(
            url, json=json, headers={"Idempotency-Key": f"test-key-{BillingClient._keys}"}
        )


@pytest.fixture
def client(api_url: str, clean: None) -> Iterator[BillingClient]:
    del clean
    with BillingClient(
        base_url=api_url, headers={"Authorization": f"Bearer {bearer_token()}"}, timeout=30
    ) as http:
        yield http
