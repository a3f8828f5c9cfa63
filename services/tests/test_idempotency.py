"""Idempotency records live in PostgreSQL with the effect they guard; Redis only caches them."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.billing.models import IdempotencyKey, Invoice, Subscription
from services.tests.conftest import BillingClient
from services.tests.factories import create_customer, create_plan


def count(db: Session, model: type[object]) -> int:
    db.rollback()  # A fresh snapshot: the API committed in other sessions.
    return db.scalar(select(func.count()).select_from(model)) or 0


def test_a_retry_after_redis_lost_everything_is_replayed(
    client: BillingClient, db: Session, cache: redis.Redis
) -> None:
    customer, plan = create_customer(client), create_plan(client)
    body = {"customer_id": customer["id"], "plan_id": plan["id"]}
    headers = {"Idempotency-Key": "start-once"}
    first = client.post("/v1/subscriptions", json=body, headers=headers)
    assert first.status_code == 201
    # Eviction, a failover to a replica that had not caught up, or a flush: all the same here.
    cache.flushall()
    retry = client.post("/v1/subscriptions", json=body, headers=headers)
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json()
    assert count(db, Subscription) == 1
    assert count(db, Invoice) == 1
    # The replay came from PostgreSQL; now Redis holds it too, and it is served from there.
    assert any(key.startswith(b"billing:idempotency:") for key in cache.scan_iter())
    again = client.post("/v1/subscriptions", json=body, headers=headers)
    assert again.json() == first.json()


def test_the_answer_is_committed_with_the_effect(client: BillingClient, db: Session) -> None:
    created = client.post(
        "/v1/customers",
        json={"email": "a@example.com", "name": "A"},
        headers={"Idempotency-Key": "k1"},
    )
    record = db.get_one(IdempotencyKey, ("merchant-1", "k1"))
    assert record.status_code == 201
    assert record.response_body == created.content
    # A refused request did nothing, so it keeps no record and its key stays free.
    missing = client.post(
        "/v1/subscriptions",
        json={"customer_id": str(uuid.uuid4()), "plan_id": str(uuid.uuid4())},
        headers={"Idempotency-Key": "k2"},
    )
    assert missing.status_code == 422
    db.rollback()
    assert db.get(IdempotencyKey, ("merchant-1", "k2")) is None


def test_concurrent_duplicates_run_once(client: BillingClient, db: Session) -> None:
    customer, plan = create_customer(client), create_plan(client)
    body = {"customer_id": customer["id"], "plan_id": plan["id"]}

    def start(_: int) -> httpx.Response:
        return client.post("/v1/subscriptions", json=body, headers={"Idempotency-Key": "race"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(start, range(8)))
    statuses = sorted(response.status_code for response in responses)
    # Each duplicate either waited for the first and got its answer, or was told it is running.
    assert set(statuses) <= {201, 409}
    created = {response.json()["id"] for response in responses if response.status_code == 201}
    assert len(created) == 1
    assert count(db, Subscription) == 1
    assert count(db, Invoice) == 1
