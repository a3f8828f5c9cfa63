"""The single-row fast path (services/api/fast.py) answers exactly as FastAPI's routes do.

Two servers of the same settings: the app as built, and the same app without FastPath, so
FastAPI's routes answer everything. Each request goes to both; status, headers and body must be
the same (but the request id, sent here, and the quota left, counted once per request). A
recorder inside the fast app tells which requests reached FastAPI, so the test also fails if
the fast path quietly passed everything on.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.middleware import Middleware

from services.api.app import create_app
from services.api.fast import FastPath
from services.api.ratelimit import window_key
from services.tests.conftest import TEST_RATE_LIMIT, BillingClient, bearer_token, serving
from services.tests.factories import create_customer, create_plan

if TYPE_CHECKING:
    from collections.abc import Iterator

    import redis
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Receive, Scope, Send

    from services.billing.config import Settings

# Strings JSON encoders are known to disagree on: escapes, quotes, non-ASCII, separators.
AWKWARD_NAME = 'Zoë "Q" O\'Brien \\ \u2028 / <b> 名前 \U0001f600'


class Recorder:
    """Innermost middleware: the paths of the requests that reached FastAPI."""

    def __init__(self, app: ASGIApp, *, seen: list[str]) -> None:
        self.app = app
        self._seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self._seen.append(scope["path"])
        await self.app(scope, receive, send)


REACHED_FASTAPI: list[str] = []


def _is_fast_path(middleware: Middleware) -> bool:
    factory: object = middleware.cls
    return factory is FastPath


def _without_fast_path(app: FastAPI) -> FastAPI:
    # Starlette builds its middleware stack from user_middleware on the first request.
    app.user_middleware = [m for m in app.user_middleware if not _is_fast_path(m)]
    return app


@pytest.fixture(scope="module")
def both(settings: Settings, engine: Any) -> Iterator[tuple[str, str]]:
    """The URLs of the app as built and of the app without its fast path."""
    del engine  # Requested for the migrations.
    fast = create_app(settings.for_api())
    assert any(_is_fast_path(m) for m in fast.user_middleware)
    # Appended: innermost, between FastPath and FastAPI's routing.
    fast.user_middleware.append(Middleware(Recorder, seen=REACHED_FASTAPI))
    with (
        serving(fast) as fast_url,
        serving(_without_fast_path(create_app(settings.for_api()))) as plain_url,
    ):
        yield fast_url, plain_url


def _same_answer(
    both: tuple[str, str], path: str, headers: dict[str, str], method: str = "GET"
) -> httpx.Response:
    """Send the request to both apps; fail unless they answer alike. The fast app's answer."""
    fast_url, plain_url = both
    sent = {"X-Request-ID": "same-request-id", **headers}
    window = rate_limit_window()
    fast = httpx.request(method, fast_url + path, headers=sent)
    plain = httpx.request(method, plain_url + path, headers=sent)
    windows = (window, rate_limit_window())
    assert (fast.status_code, fast.content) == (plain.status_code, plain.content), path
    varying = {"x-ratelimit-remaining", "retry-after", "date"}

    def kept(response: httpx.Response, base: str) -> list[tuple[str, str]]:
        # A redirect's Location names the server it came from.
        items = response.headers.multi_items()
        return [(k, v.removeprefix(base)) for k, v in items if k not in varying]

    assert kept(fast, fast_url) == kept(plain, plain_url)
    assert_counted_in_turn(fast, plain, windows)
    assert ("retry-after" in fast.headers) == ("retry-after" in plain.headers)
    return fast


def rate_limit_window() -> int:
    """The rate limit's current window (services/api/ratelimit.py, window_key)."""
    return int(time.time() // TEST_RATE_LIMIT.window_seconds)


def assert_counted_in_turn(
    fast: httpx.Response, plain: httpx.Response, windows: tuple[int, int]
) -> None:
    """Each app counted its request once, the plain one right after the fast one, for the same
    principal; unless the window turned between the two, and the second was counted afresh."""
    if "x-ratelimit-remaining" in fast.headers and windows[0] == windows[1]:
        assert int(plain.headers["x-ratelimit-remaining"]) == (
            int(fast.headers["x-ratelimit-remaining"]) - 1
        )


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_sound_reads_are_answered_alike_without_fastapi(
    both: tuple[str, str], client: BillingClient
) -> None:
    created = client.post_new("/v1/customers", {"email": "zoe@example.com", "name": AWKWARD_NAME})
    assert created.status_code == 201, created.text
    customer = created.json()
    plan = create_plan(client, amount=1999)
    reader = _auth(bearer_token(scopes="read"))
    REACHED_FASTAPI.clear()
    sound = [
        f"/v1/customers/{customer['id']}",
        f"/v1/customers/{customer['id'].upper()}",
        f"/v1/plans/{plan['id']}",
        # 404s: no such row, and another tenant's row.
        "/v1/customers/00000000-0000-4000-8000-000000000000",
        "/v1/payments/00000000-0000-4000-8000-000000000000",
    ]
    for path in sound:
        _same_answer(both, path, reader)
    answer = _same_answer(both, f"/v1/customers/{customer['id']}", reader)
    assert answer.json() == customer
    other_tenant = _auth(bearer_token("merchant-2", scopes="read"))
    missing = _same_answer(both, f"/v1/customers/{customer['id']}", other_tenant)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "customer_not_found"
    assert REACHED_FASTAPI == []


def test_every_other_request_is_left_to_fastapi(
    both: tuple[str, str], client: BillingClient
) -> None:
    customer = create_customer(client)
    path = f"/v1/customers/{customer['id']}"
    token = bearer_token(scopes="read")
    passed_on = [
        (path, {}),  # no token
        (path, {"Authorization": f"Basic {token}"}),
        (path, {"Authorization": "Bearer"}),
        (path, _auth(token + "x")),  # a forged signature
        (path, _auth(bearer_token(lifetime=timedelta(hours=-2)))),  # expired
        (path, _auth(bearer_token(scopes=""))),  # 403: no read scope
        ("/v1/customers/not-a-uuid", _auth(token)),  # 422
        (path.replace("-", ""), _auth(token)),  # another spelling FastAPI's UUID accepts
        (path + "/", _auth(token)),
        ("/v1/invoices/00000000-0000-4000-8000-000000000000", _auth(token)),  # not marked
    ]
    REACHED_FASTAPI.clear()
    statuses = [_same_answer(both, p, h).status_code for p, h in passed_on]
    assert statuses[:7] == [401, 401, 401, 401, 401, 403, 422]
    assert statuses[7:9] == [200, 307]
    head = _same_answer(both, path, _auth(token), method="HEAD")
    assert head.status_code == 405
    assert [p for p, _ in passed_on] + [path] == REACHED_FASTAPI


def test_the_rate_limit_is_counted_and_enforced_alike(
    both: tuple[str, str], client: BillingClient, cache: redis.Redis
) -> None:
    customer = create_customer(client)
    path = f"/v1/customers/{customer['id']}"
    headers = _auth(bearer_token(scopes="read", subject="limited"))
    first = _same_answer(both, path, headers)
    assert int(first.headers["X-RateLimit-Limit"]) == TEST_RATE_LIMIT.requests
    for _ in range(2):  # the window may turn over between filling it and the request
        key = window_key("merchant-1/limited", TEST_RATE_LIMIT.window_seconds, time.time())
        cache.set(key, TEST_RATE_LIMIT.requests, ex=TEST_RATE_LIMIT.window_seconds)
        refused = _same_answer(both, path, headers)
        if refused.status_code == 429:
            break
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1


def test_fast_answers_are_logged_and_counted_under_their_route(
    both: tuple[str, str], client: BillingClient, caplog: pytest.LogCaptureFixture
) -> None:
    customer = create_customer(client)
    labels = {"method": "GET", "route": "/v1/customers/{customer_id}", "status": "200"}
    before = REGISTRY.get_sample_value("billing_http_requests_total", labels) or 0.0
    REACHED_FASTAPI.clear()
    with caplog.at_level("INFO", logger="services.api.access"):
        response = httpx.get(
            f"{both[0]}/v1/customers/{customer['id']}",
            headers=_auth(bearer_token(scopes="read", subject="logged")),
        )
        assert response.status_code == 200
        # The server's thread logs and counts once the answer is sent: wait for it.
        deadline = time.monotonic() + 10
        while not _access_lines(caplog, response) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert REACHED_FASTAPI == []
    assert len(response.headers["X-Request-ID"]) == 32
    after = REGISTRY.get_sample_value("billing_http_requests_total", labels) or 0.0
    # At least this request under its route's template (a late count of an earlier test's
    # GET, answered by these servers, may land in between: the count follows the answer).
    assert after >= before + 1
    [line] = _access_lines(caplog, response)
    assert (line.status, line.tenant, line.subject) == (200, "merchant-1", "logged")


def _access_lines(caplog: pytest.LogCaptureFixture, response: httpx.Response) -> list[Any]:
    return [r for r in caplog.records if getattr(r, "path", None) == response.url.path]
