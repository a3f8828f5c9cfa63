"""What every request goes through: authentication, idempotency, rate limits, errors, ids."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import psycopg
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.api.ratelimit import window_key
from services.billing.models import Customer
from services.tests.conftest import TEST_RATE_LIMIT, BillingClient, Servers, bearer_token

CUSTOMER = {"email": "ada@example.com", "name": "Ada", "payment_method": "pm_card_visa"}


def customer_count(db: Session) -> int:
    db.rollback()  # A fresh snapshot: the API committed in another session.
    return db.scalar(select(func.count()).select_from(Customer)) or 0


def test_requests_without_a_valid_token_are_refused(client: BillingClient) -> None:
    cases = {
        None: "unauthenticated",
        "Basic dXNlcjpwYXNz": "unauthenticated",
        "Bearer not-a-jwt": "token_invalid",
        f"Bearer {bearer_token(lifetime=-timedelta(minutes=2))}": "token_expired",
    }
    for authorization, code in cases.items():
        headers = {"Authorization": authorization} if authorization else {}
        response = httpx.get(f"{client.base_url}/v1/customers", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == code
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_token_signed_with_another_secret_is_refused(client: BillingClient) -> None:
    import jwt

    forged = jwt.encode(
        {"sub": "merchant-1", "exp": int(time.time()) + 60},
        "another-secret-0123456789abcdef0123456789",
        algorithm="HS256",
    )
    response = httpx.get(
        f"{client.base_url}/v1/customers", headers={"Authorization": f"Bearer {forged}"}
    )
    assert response.json()["error"]["code"] == "token_invalid"


def test_a_retried_post_is_replayed_not_repeated(client: BillingClient, db: Session) -> None:
    headers = {"Idempotency-Key": "create-ada"}
    first = client.post("/v1/customers", json=CUSTOMER, headers=headers)
    second = client.post("/v1/customers", json=CUSTOMER, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert customer_count(db) == 1


def test_reusing_a_key_for_another_request_is_rejected(client: BillingClient, db: Session) -> None:
    headers = {"Idempotency-Key": "create-once"}
    client.post("/v1/customers", json=CUSTOMER, headers=headers)
    response = client.post("/v1/customers", json={**CUSTOMER, "name": "Eve"}, headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert customer_count(db) == 1


def test_keys_belong_to_their_principal(client: BillingClient, db: Session) -> None:
    headers = {"Idempotency-Key": "shared-key"}
    client.post("/v1/customers", json=CUSTOMER, headers=headers)
    other = {"Authorization": f"Bearer {bearer_token('merchant-2')}", **headers}
    response = httpx.post(f"{client.base_url}/v1/customers", json=CUSTOMER, headers=other)
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response.headers
    assert customer_count(db) == 2


def test_posts_need_a_well_formed_idempotency_key(client: BillingClient, db: Session) -> None:
    missing = client.post("/v1/customers", json=CUSTOMER)
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "idempotency_key_missing"
    spaced = client.post("/v1/customers", json=CUSTOMER, headers={"Idempotency-Key": "a b"})
    assert spaced.json()["error"]["code"] == "idempotency_key_invalid"
    assert customer_count(db) == 0


def test_a_rejected_request_does_not_burn_its_key(client: BillingClient, db: Session) -> None:
    headers = {"Idempotency-Key": "fix-and-retry"}
    bad = client.post("/v1/customers", json={**CUSTOMER, "email": "nope"}, headers=headers)
    assert bad.status_code == 422
    good = client.post("/v1/customers", json=CUSTOMER, headers=headers)
    assert good.status_code == 201
    assert customer_count(db) == 1


def test_a_key_in_use_answers_409(client: BillingClient, servers: Servers, db: Session) -> None:
    busy = {"Idempotency-Key": "busy-key"}
    # Another transaction holds an uncommitted claim on the key, as a request still running does.
    with psycopg.connect(servers.postgres.conninfo()) as running:
        running.execute("SELECT set_config('billing.tenant_id', 'merchant-1', true)")
        running.execute(
            "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, created_at, claimed_at)"
            " VALUES ('merchant-1', 'busy-key', 'f', now(), now())"
        )
        response = client.post(
            "/v1/customers", json=CUSTOMER, headers={"Idempotency-Key": "busy-key"}
        )
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "idempotency_request_in_progress"
        running.rollback()
    # The claim's transaction rolled back: nothing was done, so the key is free again.
    retried = client.post("/v1/customers", json=CUSTOMER, headers=busy)
    assert retried.status_code == 201
    assert customer_count(db) == 1


def test_rate_limit_counts_each_request_in_a_window_that_expires(
    client: BillingClient, cache: redis.Redis
) -> None:
    for _ in range(2):  # Once more if a window turned over between the two requests.
        cache.flushdb()
        first = client.get("/v1/customers")
        second = client.get("/v1/customers")
        keys = cache.keys("billing:ratelimit:merchant-1/tester:*")
        if len(keys) == 1:
            break
    assert int(first.headers["X-RateLimit-Remaining"]) - 1 == int(
        second.headers["X-RateLimit-Remaining"]
    )
    [key] = keys
    # The window's counter goes away after the window (and a second's grace).
    assert 0 < int(cache.ttl(key)) <= TEST_RATE_LIMIT.window_seconds + 1
    # A restarted or failed-over Redis has forgotten the script: it is loaded again.
    cache.script_flush()
    third = client.get("/v1/customers")
    assert int(third.headers["X-RateLimit-Remaining"]) < int(
        second.headers["X-RateLimit-Remaining"]
    )


def test_rate_limit_answers_429_with_retry_after(client: BillingClient, cache: redis.Redis) -> None:
    # Fill this window's counter as if the principal had already sent its quota.
    key = window_key("merchant-1/tester", TEST_RATE_LIMIT.window_seconds, time.time())
    cache.set(key, TEST_RATE_LIMIT.requests, ex=TEST_RATE_LIMIT.window_seconds)
    response = client.get("/v1/customers")
    if response.status_code != 429:  # The window turned over in between; fill the new one.
        key = window_key("merchant-1/tester", TEST_RATE_LIMIT.window_seconds, time.time())
        cache.set(key, TEST_RATE_LIMIT.requests, ex=TEST_RATE_LIMIT.window_seconds)
        response = client.get("/v1/customers")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1
    other = httpx.get(
        f"{client.base_url}/v1/customers",
        headers={"Authorization": f"Bearer {bearer_token('merchant-2')}"},
    )
    assert other.status_code == 200
    # The limit is the API's BILLING_RATE_LIMIT_PER_MINUTE, not a constant of the code.
    assert int(other.headers["X-RateLimit-Limit"]) == TEST_RATE_LIMIT.requests
    assert int(other.headers["X-RateLimit-Remaining"]) == TEST_RATE_LIMIT.requests - 1


def test_unknown_routes_and_methods_answer_json_errors(client: BillingClient) -> None:
    missing = client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong_method = client.delete("/v1/customers")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert wrong_method.headers["Allow"] == "GET, POST"


def test_routing_comes_before_authentication_idempotency_and_rate_limits(
    client: BillingClient,
) -> None:
    customer = "/v1/customers/00000000-0000-0000-0000-000000000000"
    # No token and no Idempotency-Key: still a 405 naming every method the path has.
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        response = httpx.request(method, f"{client.base_url}{customer}")
        assert response.status_code == 405, method
        assert response.headers["Allow"] == "GET, PATCH"
    assert httpx.post(f"{client.base_url}/v1/invoices").headers["Allow"] == "GET"
    assert httpx.get(f"{client.base_url}/v1/nothing").status_code == 404


def test_request_ids_are_echoed_or_made(client: BillingClient) -> None:
    echoed = client.get("/health", headers={"X-Request-ID": "req-123"})
    assert echoed.headers["X-Request-ID"] == "req-123"
    made = client.get("/health", headers={"X-Request-ID": 'not"acceptable {}'})
    assert len(made.headers["X-Request-ID"]) == 32


def test_health_ready_and_metrics(client: BillingClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}
    client.get("/v1/customers")
    counted = 'billing_http_requests_total{method="GET",route="/v1/customers",status="200"}'
    # A request is counted once its answer has gone out (its duration is the metric), so the
    # client may ask for the metrics before the server has written them: ask again.
    for _ in range(50):
        metrics = client.get("/metrics").text
        if counted in metrics:
            break
    assert counted in metrics
    assert "billing_http_request_duration_seconds_bucket" in metrics


def test_openapi_documents_every_resource_and_the_bearer_scheme(client: BillingClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    for path in (
        "/v1/customers",
        "/v1/plans",
        "/v1/subscriptions/{subscription_id}/change-plan",
        "/v1/subscriptions/{subscription_id}/cancel",
        "/v1/subscriptions/{subscription_id}/pause",
        "/v1/invoices/{invoice_id}/pay",
        "/v1/invoices/{invoice_id}/void",
        "/v1/payments",
        "/v1/webhooks/stripe",
        "/health",
    ):
        assert path in paths
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    amount = schema["components"]["schemas"]["PlanCreate"]["properties"]["amount"]
    assert amount["type"] == "integer"


def test_openapi_declares_headers_scopes_errors_and_links(client: BillingClient) -> None:
    document = client.get("/openapi.json").json()
    create = document["paths"]["/v1/customers"]["post"]
    key = next(p for p in create["parameters"] if p["name"] == "Idempotency-Key")
    assert (key["in"], key["required"]) == ("header", True)
    assert create["security"] == [{"bearer": ["write"]}]
    created = create["responses"]["201"]
    assert set(created["headers"]) == {
        "X-Request-ID",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "Idempotent-Replayed",
    }
    assert created["links"]["GetCustomer"] == {
        "operationId": "get_customer",
        "parameters": {"customer_id": "$response.body#/id"},
    }
    for status in ("400", "401", "403", "409", "413", "422", "429"):
        error = create["responses"][status]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/ErrorBody"}, status
    assert "Retry-After" in create["responses"]["429"]["headers"]
    assert document["paths"]["/v1/plans"]["post"]["security"] == [{"bearer": ["admin"]}]
    void = document["paths"]["/v1/invoices/{invoice_id}/void"]["post"]
    assert void["security"] == [{"bearer": ["admin"]}]
    assert document["paths"]["/v1/customers"]["get"]["security"] == [{"bearer": ["read"]}]
    webhook = document["paths"]["/v1/webhooks/stripe"]["post"]
    assert webhook["security"] == []
    signature = next(p for p in webhook["parameters"] if p["name"] == "Stripe-Signature")
    assert signature["required"] is True
    assert "413" in webhook["responses"]
    # Every operation id is the handler's name, which is what a generated client calls.
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert "create_customer" in ids
