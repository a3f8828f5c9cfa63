"""Limits on what a request or a dependency can cost: timeouts, a circuit breaker, body caps,
data kept out of logs, and the ports and headers the API trusts."""

from __future__ import annotations

import dataclasses
import gc
import json
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from services import devservers
from services.api.app import create_app
from services.billing.cache import FAILURES_TO_OPEN, CircuitBreaker, CircuitOpenError
from services.billing.config import Settings
from services.billing.db import create_database_engine
from services.tests.conftest import BillingClient, bearer_token, serving, subprocess_env
from services.tests.processes import start_service, stop, wait_until_serving

INSERT_WITH_A_BAD_CURRENCY = text(
    "INSERT INTO customers (id, tenant_id, email, name, currency) "
    "VALUES (gen_random_uuid(), 't', :email, :name, 'usd')"
)
PRIVATE = {"email": "ada.private@example.com", "name": "Ada Private"}


def test_database_errors_never_carry_the_parameters(settings: Settings, engine: Engine) -> None:
    del engine  # Migrated.
    database = create_database_engine(settings.database)
    try:
        with database.begin() as connection:
            connection.execute(text("SELECT set_config('billing.all_tenants', 'on', true)"))
            with pytest.raises(IntegrityError) as raised:
                connection.execute(INSERT_WITH_A_BAD_CURRENCY, PRIVATE)
    finally:
        database.dispose()
    message = str(raised.value)
    assert "ck_customers_currency_iso" in message
    assert "ada.private@example.com" not in message
    assert "Ada Private" not in message


def test_every_connection_has_bounded_waits(engine: Engine) -> None:
    with engine.connect() as connection:
        shown = {
            name: connection.execute(text(f"SHOW {name}")).scalar()
            for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
        }
    assert shown == {
        "statement_timeout": "10s",
        "lock_timeout": "3s",
        "idle_in_transaction_session_timeout": "1min",
    }


class Blackhole:
    """A TCP server that accepts connections and never answers: a hung Redis."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port: int = self.listener.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self._held:
            connection.close()


@pytest.fixture
def hung_redis() -> Iterator[Blackhole]:
    blackhole = Blackhole()
    yield blackhole
    blackhole.close()


def test_a_hung_redis_is_skipped_once_the_breaker_opens(
    settings: Settings, engine: Engine, hung_redis: Blackhole
) -> None:
    del engine  # Migrated.
    broken = dataclasses.replace(
        settings, cache=dataclasses.replace(settings.cache, port=hung_redis.port)
    )
    headers = {"Authorization": f"Bearer {bearer_token()}"}
    with serving(create_app(broken.for_api())) as url:
        for _ in range(10):
            response = httpx.get(f"{url}/v1/customers", headers=headers, timeout=30)
            # Rate limits fail open: the API serves without Redis.
            assert response.status_code == 200
            assert "X-RateLimit-Remaining" not in response.headers
    # Each failed call costs a connection and its timeout; after FAILURES_TO_OPEN of them the
    # breaker stops trying, so ten requests never made ten attempts.
    assert FAILURES_TO_OPEN <= hung_redis.accepted <= FAILURES_TO_OPEN + 1


def test_startup_hides_the_long_lived_heap_from_the_collector(
    settings: Settings, engine: Engine
) -> None:
    del engine  # Requested for the migrations.
    before = gc.get_freeze_count()
    # The app, its routes, schemas and pools: built after any earlier freeze in this process.
    with serving(create_app(settings.for_api())) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        frozen = gc.get_freeze_count()
    # Full collections no longer walk them (services/api/app.py, lifespan).
    assert frozen - before > 1000


def test_the_breaker_opens_probes_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures_to_open=2, open_seconds=5, clock=lambda: now[0])
    breaker.failed()
    breaker.before_call()  # One failure: still closed.
    breaker.failed()
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    now[0] = 6.0
    breaker.before_call()  # Half-open: one probe goes through...
    with pytest.raises(CircuitOpenError):
        breaker.before_call()  # ...and the others keep failing fast while it runs.
    breaker.succeeded()
    breaker.before_call()
    assert not breaker.is_open


def test_webhook_bodies_are_capped_while_streaming(client: BillingClient) -> None:
    url = f"{client.base_url}/v1/webhooks/stripe"
    declared = httpx.post(url, content=b"x" * (64 * 1024 + 1), headers={"Stripe-Signature": "t=1"})
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:
        # Chunked: no Content-Length to refuse up front; 16 MiB if nobody stops reading.
        for _ in range(256):
            yield b"x" * 65536

    streamed = httpx.post(url, content=chunks(), headers={"Stripe-Signature": "t=1"})
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "payload_too_large"


def test_other_bodies_are_capped_at_one_mebibyte(client: BillingClient) -> None:
    response = client.post(
        "/v1/customers",
        content=b'{"name": "' + b"x" * (1024 * 1024) + b'"}',
        headers={"Idempotency-Key": "big", "Content-Type": "application/json"},
    )
    assert response.status_code == 413


def _access_log_clients(log: Path) -> list[str]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line["client"] for line in lines if line.get("message") == "request"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("trusted", "logged_client"), [("", "127.0.0.1"), ("10.0.0.0/8,127.0.0.1/32", "203.0.113.9")]
)
def test_ports_and_forwarded_headers(
    service_env: dict[str, str], engine: Engine, tmp_path: Path, trusted: str, logged_client: str
) -> None:
    del engine  # Migrated.
    port, internal_port = devservers.free_port(), devservers.free_port()
    public, internal = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{internal_port}"
    env = subprocess_env(
        service_env,
        BILLING_HOST="127.0.0.1",
        BILLING_PORT=str(port),
        BILLING_INTERNAL_PORT=str(internal_port),
        BILLING_TRUSTED_PROXIES=trusted,
    )
    log = tmp_path / "api.log"
    api = start_service("services.api", env, log=log)
    try:
        wait_until_serving(public, api, log)
        # The load balancer's port serves the API and /health, never readiness or metrics.
        assert httpx.get(f"{public}/metrics").status_code == 404
        assert httpx.get(f"{public}/ready").status_code == 404
        assert httpx.get(f"{internal}/ready").json()["status"] == "ready"
        assert "billing_http_requests_total" in httpx.get(f"{internal}/metrics").text
        assert httpx.get(f"{internal}/health").status_code == 404
        headers = {"Authorization": f"Bearer {bearer_token()}", "X-Forwarded-For": "203.0.113.9"}
        assert httpx.get(f"{public}/v1/plans", headers=headers).status_code == 200
        # A graceful stop, so the last access-log line is written.
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=30)
    finally:
        stop(api)
    assert _access_log_clients(log)[-1] == logged_client
