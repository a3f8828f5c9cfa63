"""The idempotent-POST fast path (services/api/fast_writes.py) answers exactly as FastAPI does.

Two servers of the same settings and database: the app as built, and the same app without
FastWrites, so FastAPI's route answers every POST. Refusals are sent to both and must be the
same (but the quota left, counted once per request). A new customer's answer differs only in
its id, timestamp and gateway id, so each side's first answer is replayed by the other, and
must come back byte for byte. A recorder inside the fast app tells which requests reached
FastAPI, so the test also fails if the fast path quietly passed everything on.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
from starlette.middleware import Middleware

from services.api.app import create_app
from services.api.fast_writes import FastWrites
from services.api.ratelimit import window_key
from services.billing.gateway import GatewayUnavailableError, SimulatorGateway
from services.tests.conftest import TEST_RATE_LIMIT, bearer_token, serving
from services.tests.test_fast_path import (
    AWKWARD_NAME,
    Recorder,
    assert_counted_in_turn,
    rate_limit_window,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    import redis
    from fastapi import FastAPI

    from services.billing.config import Settings
    from services.tests.conftest import Servers

REACHED_FASTAPI: list[str] = []
CUSTOMER = {"email": "fast@example.com", "name": AWKWARD_NAME, "payment_method": "pm_card_visa"}
GATEWAY_DOWN = "pm_gateway_down"
# Headers that differ between two answers to the same request, by design.
VARYING = {"x-ratelimit-remaining", "retry-after", "date", "content-length"}


class Gateway(SimulatorGateway):
    """The simulator, but a customer registration with GATEWAY_DOWN meets an outage."""

    async def create_customer_async(
        self, *, email: str, name: str, payment_method: str | None, idempotency_key: str
    ) -> str:
        if payment_method == GATEWAY_DOWN:
            raise GatewayUnavailableError("simulated outage")
        return await super().create_customer_async(
            email=email, name=name, payment_method=payment_method, idempotency_key=idempotency_key
        )


def _without_fast_writes(app: FastAPI) -> FastAPI:
    # Starlette builds its middleware stack from user_middleware on the first request.
    app.user_middleware = [m for m in app.user_middleware if m.cls is not FastWrites]  # type: ignore[comparison-overlap]
    return app


@pytest.fixture(scope="module")
def both(settings: Settings, engine: Any, cache: redis.Redis) -> Iterator[tuple[str, str]]:
    """The URLs of the app as built and of the app without FastWrites."""
    del engine  # Requested for the migrations.
    fast = create_app(settings.for_api(), gateway=Gateway(cache))
    assert any(m.cls is FastWrites for m in fast.user_middleware)  # type: ignore[comparison-overlap]
    # Appended: innermost, between the fast paths and FastAPI's routing.
    fast.user_middleware.append(Middleware(Recorder, seen=REACHED_FASTAPI))
    plain = _without_fast_writes(create_app(settings.for_api(), gateway=Gateway(cache)))
    with serving(fast) as fast_url, serving(plain) as plain_url:
        yield fast_url, plain_url


def _headers(key: str | None = None, *, scopes: str = "write", **more: str) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {bearer_token(scopes=scopes)}", **more}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def _post(url: str, headers: dict[str, str], body: object) -> httpx.Response:
    sent = {"X-Request-ID": "same-request-id", **headers}
    if isinstance(body, bytes):
        sent.setdefault("Content-Type", "application/json")
        return httpx.post(f"{url}/v1/customers", content=body, headers=sent, timeout=30)
    return httpx.post(f"{url}/v1/customers", json=body, headers=sent, timeout=30)


def _kept(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in response.headers.multi_items() if k not in VARYING]


def _same_answer(
    both: tuple[str, str], headers: dict[str, str], body: object = CUSTOMER
) -> httpx.Response:
    """Send the request to both apps, the fast one first; fail unless they answer alike."""
    fast_url, plain_url = both
    window = rate_limit_window()
    fast = _post(fast_url, headers, body)
    plain = _post(plain_url, headers, body)
    windows = (window, rate_limit_window())
    assert (fast.status_code, fast.content) == (plain.status_code, plain.content)
    assert _kept(fast) == _kept(plain)
    assert_counted_in_turn(fast, plain, windows)
    return fast


def test_new_customers_and_replays_are_answered_alike_without_fastapi(
    both: tuple[str, str], clean: None, cache: redis.Redis
) -> None:
    del clean
    fast_url, plain_url = both
    REACHED_FASTAPI.clear()
    made_fast = _post(fast_url, _headers("made-fast"), CUSTOMER)
    made_plain = _post(plain_url, _headers("made-plain"), CUSTOMER)
    assert made_fast.status_code == made_plain.status_code == 201, made_fast.text
    assert _kept(made_fast) == _kept(made_plain)
    assert "Idempotent-Replayed" not in made_fast.headers
    volatile = {"id", "created_at"}
    first, second = made_fast.json(), made_plain.json()
    assert {k: v for k, v in first.items() if k not in volatile} == {
        k: v for k, v in second.items() if k not in volatile
    }
    # Each side replays what the other answered, from the cache and then from PostgreSQL.
    for _ in range(2):
        for made, url in ((made_fast, plain_url), (made_plain, fast_url)):
            key = made.request.headers["Idempotency-Key"]
            replayed = _post(url, _headers(key), CUSTOMER)
            assert (replayed.status_code, replayed.content) == (201, made.content)
            assert replayed.headers["Idempotent-Replayed"] == "true"
            assert sorted(_kept(replayed)) == sorted(
                [*_kept(made), ("idempotent-replayed", "true")]
            )
            assert _same_answer(both, _headers(key)).content == made.content
        cache.flushall()
    # The same key with another body, from either side.
    reused = _same_answer(both, _headers("made-fast"), {**CUSTOMER, "name": "Eve"})
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert REACHED_FASTAPI == []


def test_a_key_in_use_and_a_gateway_outage_are_answered_alike(
    both: tuple[str, str], clean: None, servers: Servers
) -> None:
    del clean
    REACHED_FASTAPI.clear()
    with psycopg.connect(servers.postgres.conninfo()) as running:
        # Another transaction holds an uncommitted claim on the key, as a request running does.
        running.execute("SELECT set_config('billing.tenant_id', 'merchant-1', true)")
        running.execute(
            "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, created_at, claimed_at)"
            " VALUES ('merchant-1', 'busy', 'f', now(), now())"
        )
        busy = _same_answer(both, _headers("busy"))
        running.rollback()
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "idempotency_request_in_progress"
    down = _same_answer(both, _headers("down"), {**CUSTOMER, "payment_method": GATEWAY_DOWN})
    assert down.status_code == 503
    assert down.json()["error"]["code"] == "gateway_unavailable"
    assert REACHED_FASTAPI == []


def test_every_other_post_is_left_to_fastapi(both: tuple[str, str], clean: None) -> None:
    del clean
    passed_on: list[tuple[dict[str, str], object]] = [
        ({}, CUSTOMER),  # no token
        (_headers("k1", scopes="read"), CUSTOMER),  # 403
        ({"Authorization": "Bearer forged", "Idempotency-Key": "k2"}, CUSTOMER),
        (_headers(), CUSTOMER),  # 400: no key
        (_headers("a b"), CUSTOMER),  # 400: a space in the key
        (_headers("k3"), {**CUSTOMER, "email": "nope"}),  # 422
        (_headers("k4"), {**CUSTOMER, "extra": 1}),  # 422: unknown field
        (_headers("k5"), b'{"email": '),  # 400: not JSON
        (_headers("k6"), b""),  # 422: no body at all
        (_headers("k7", **{"Content-Type": "text/plain"}), b"{}"),
        (_headers("k8"), b"[]"),
    ]
    REACHED_FASTAPI.clear()
    statuses = [_same_answer(both, headers, body).status_code for headers, body in passed_on]
    assert statuses == [401, 403, 401, 400, 400, 422, 422, 400, 422, 422, 422]
    assert ["/v1/customers"] * len(passed_on) == REACHED_FASTAPI


def test_the_rate_limit_is_counted_and_enforced_alike(
    both: tuple[str, str], clean: None, cache: redis.Redis
) -> None:
    del clean
    headers = _headers("limited", scopes="write")
    headers["Authorization"] = f"Bearer {bearer_token(scopes='write', subject='limited')}"
    for _ in range(2):  # the window may turn over between filling it and the request
        key = window_key("merchant-1/limited", TEST_RATE_LIMIT.window_seconds, time.time())
        cache.set(key, TEST_RATE_LIMIT.requests, ex=TEST_RATE_LIMIT.window_seconds)
        refused = _same_answer(both, headers)
        if refused.status_code == 429:
            break
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"


def test_an_expired_token_is_left_to_fastapi(both: tuple[str, str], clean: None) -> None:
    del clean
    expired = bearer_token(lifetime=-timedelta(hours=2))
    REACHED_FASTAPI.clear()
    headers = {"Authorization": f"Bearer {expired}", "Idempotency-Key": "late"}
    assert _same_answer(both, headers).status_code == 401
    assert REACHED_FASTAPI == ["/v1/customers"]
