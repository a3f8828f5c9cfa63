"""Idempotent writes on the event loop (services/api/writes.py): once per key under concurrency,
nothing left by a request that fails or dies between its claim and its commit, claims that
survive dead pooled connections, the tenant walls, and statements each connection prepares
once and keeps."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import psycopg
import pytest
import redis
from psycopg_pool import PoolTimeout
from sqlalchemy import func, select

from services.api import schemas
from services.api.app import create_app
from services.api.idempotency import StoredResponse
from services.api.writes import ClaimedKey, IdempotentWrites
from services.billing.db import DatabaseTimeouts, TenantMismatchError
from services.billing.gateway import GatewayUnavailableError, SimulatorGateway
from services.billing.ids import new_id
from services.billing.models import Customer, IdempotencyKey
from services.tests.conftest import BillingClient, Servers, bearer_token, run_async, serving
from services.tests.test_reads import _terminate_service_connections

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from services.billing.config import Settings

CUSTOMER = {"email": "write@example.com", "name": "Write", "payment_method": "pm_card_visa"}


def count(db: Session, model: type[object]) -> int:
    db.rollback()  # A fresh snapshot: the API committed in other sessions.
    return db.scalar(select(func.count()).select_from(model)) or 0


def with_writes(
    settings: Settings, size: int, work: Callable[[IdempotentWrites], Awaitable[None]]
) -> None:
    async def run() -> None:
        writes = IdempotentWrites(settings.database, size=size)
        await writes.open()
        try:
            await work(writes)
        finally:
            await writes.close()

    run_async(run())


def customer_row(claimed: ClaimedKey, **values: Any) -> dict[str, Any]:
    return {
        "id": new_id(),
        "email": "direct@example.com",
        "name": "Direct",
        "payment_method": None,
        "gateway_customer_id": None,
        "currency": None,
        "credit_balance": 0,
        "created_at": claimed.claimed_at,
        **values,
    }


async def claim(writes: IdempotentWrites, key: str, tenant: str = "merchant-1") -> ClaimedKey:
    claimed = await writes.claim(tenant, key, "fingerprint")
    assert isinstance(claimed, ClaimedKey)
    return claimed


async def create(writes: IdempotentWrites, key: str) -> dict[str, Any]:
    claimed = await claim(writes, key)
    try:
        row = customer_row(claimed)
        await claimed.respond(
            schemas.Customer.model_validate(row), status=201, rows=[(Customer, row)]
        )
    finally:
        await claimed.close()
    return row


def test_concurrent_posts_with_one_key_create_one_customer(
    client: BillingClient, db: Session
) -> None:
    def post(_: int) -> httpx.Response:
        return client.post("/v1/customers", json=CUSTOMER, headers={"Idempotency-Key": "race"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, range(8)))
    # Each duplicate waited for the first and got its answer, or was told it is running.
    assert {response.status_code for response in responses} <= {201, 409}
    created = [response for response in responses if response.status_code == 201]
    assert len({response.content for response in created}) == 1
    assert sum("Idempotent-Replayed" not in response.headers for response in created) == 1
    assert count(db, Customer) == 1
    record = db.get_one(IdempotencyKey, ("merchant-1", "race"))
    assert record.response_body == created[0].content


def test_a_replay_from_postgresql_is_the_first_answer_byte_for_byte(
    client: BillingClient, db: Session, cache: redis.Redis
) -> None:
    headers = {"Idempotency-Key": "replay-me"}
    first = client.post("/v1/customers", json=CUSTOMER, headers=headers)
    assert first.status_code == 201
    cache.flushall()
    replayed = client.post("/v1/customers", json=CUSTOMER, headers=headers)
    assert replayed.status_code == 201
    assert replayed.content == first.content
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.headers["Content-Type"] == first.headers["Content-Type"] == "application/json"
    # The row is the answer: the gateway's id is kept, the timestamp is the transaction's.
    row = db.get_one(Customer, uuid.UUID(first.json()["id"]))
    assert schemas.Customer.model_validate(row).model_dump_json().encode() == first.content
    assert row.tenant_id == "merchant-1"
    assert row.gateway_customer_id is not None
    assert row.gateway_customer_id.startswith("cus_sim_")
    assert row.debit_balance == 0
    assert count(db, Customer) == 1


class FlakyGateway(SimulatorGateway):
    """The simulator, but its first customer registration fails as a gateway outage does."""

    def __init__(self, cache: redis.Redis) -> None:
        super().__init__(cache)
        self.keys: list[str] = []

    async def create_customer_async(
        self, *, email: str, name: str, payment_method: str | None, idempotency_key: str
    ) -> str:
        self.keys.append(idempotency_key)
        if len(self.keys) == 1:
            raise GatewayUnavailableError("simulated outage")
        return await super().create_customer_async(
            email=email, name=name, payment_method=payment_method, idempotency_key=idempotency_key
        )


def test_a_failure_between_claim_and_commit_leaves_nothing(
    settings: Settings, engine: Engine, db: Session, cache: redis.Redis
) -> None:
    del engine  # Migrated.
    gateway = FlakyGateway(cache)
    headers = {"Authorization": f"Bearer {bearer_token()}", "Idempotency-Key": "flaky"}
    with serving(create_app(settings.for_api(), gateway=gateway)) as url:
        failed = httpx.post(f"{url}/v1/customers", json=CUSTOMER, headers=headers, timeout=30)
        assert failed.status_code == 503
        assert failed.json()["error"]["code"] == "gateway_unavailable"
        # The claim was rolled back with the request: no record, no row, the key is free.
        assert count(db, Customer) == 0
        assert db.get(IdempotencyKey, ("merchant-1", "flaky")) is None
        retried = httpx.post(f"{url}/v1/customers", json=CUSTOMER, headers=headers, timeout=30)
    assert retried.status_code == 201, retried.text
    assert "Idempotent-Replayed" not in retried.headers
    assert count(db, Customer) == 1
    # Both tries asked the gateway with the same key: it finds the customer, never makes two.
    assert gateway.keys == ["billing-customer-merchant-1:flaky"] * 2


def test_a_claim_whose_connection_dies_before_its_commit_leaves_nothing(
    settings: Settings, servers: Servers, db: Session
) -> None:
    async def work(writes: IdempotentWrites) -> None:
        claimed = await claim(writes, "crash")
        # The process dies, or its connection does, between the claim and the commit: the
        # server ends the transaction, and the claim goes with it.
        assert _terminate_service_connections(servers) > 0
        row = customer_row(claimed)
        with pytest.raises(psycopg.OperationalError):
            await claimed.respond(schemas.Customer.model_validate(row), rows=[(Customer, row)])
        await claimed.close()
        # Not 409: nothing holds the key, and the next claim takes it at once.
        await create(writes, "crash")

    with_writes(settings, 2, work)
    assert count(db, Customer) == 1
    assert db.get_one(IdempotencyKey, ("merchant-1", "crash")).status_code == 201


def test_claims_survive_connections_killed_in_the_pool(
    settings: Settings, servers: Servers, db: Session
) -> None:
    async def work(writes: IdempotentWrites) -> None:
        await create(writes, "before")
        # Every pooled connection dies (a failover); the next claim meets each dead one first.
        assert _terminate_service_connections(servers) >= writes.pool.max_size
        await create(writes, "after")

    with_writes(settings, 3, work)
    assert count(db, Customer) == 2


def test_writes_stamp_and_see_only_the_claims_tenant(settings: Settings, db: Session) -> None:
    async def work(writes: IdempotentWrites) -> None:
        claimed = await claim(writes, "walls")
        try:
            # First wall: a row naming another tenant is refused before anything is sent.
            row = customer_row(claimed, tenant_id="merchant-2")
            with pytest.raises(TenantMismatchError):
                await claimed.respond(schemas.Customer.model_validate(row), rows=[(Customer, row)])
            # Second wall: row-level security sees the claim's tenant only, whatever a
            # statement names.
            insert, values = claimed._row(Customer, customer_row(claimed))
            other_tenant = insert.parameters({**values, "tenant_id": "merchant-2"})
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
                await claimed._connection.execute(insert.sql, other_tenant)
        finally:
            await claimed.close()
        # The same key is another tenant's own key.
        other = await claim(writes, "walls", tenant="merchant-2")
        await other.close()

    with_writes(settings, 1, work)
    assert count(db, Customer) == 0
    assert count(db, IdempotencyKey) == 0


def test_a_used_key_answers_from_the_database(settings: Settings, db: Session) -> None:
    async def work(writes: IdempotentWrites) -> None:
        row = await create(writes, "used")
        stored = await writes.claim("merchant-1", "used", "fingerprint")
        assert isinstance(stored, StoredResponse)
        assert stored.status == 201
        assert stored.body == schemas.Customer.model_validate(row).model_dump_json().encode()
        reused = await asyncio.gather(
            writes.claim("merchant-1", "used", "another request"), return_exceptions=True
        )
        assert getattr(reused[0], "code", None) == "idempotency_key_reused"

    with_writes(settings, 1, work)
    assert count(db, Customer) == 1


def test_a_request_cancelled_between_claim_and_commit_leaves_nothing(
    settings: Settings, db: Session
) -> None:
    async def work(writes: IdempotentWrites) -> None:
        claimed_it = anyio.Event()

        async def request() -> None:
            claimed = await claim(writes, "cancelled")
            try:
                claimed_it.set()
                await anyio.sleep_forever()  # the gateway's call, say
            finally:
                await claimed.close()

        async with anyio.create_task_group() as requests:
            requests.start_soon(request)
            await claimed_it.wait()
            # Cancelled as anyio cancels: every await after it raises too, the rollback's
            # included, unless shielded.
            requests.cancel_scope.cancel()
        # The pool's only connection came back, and the claim went with its transaction: the
        # same key is claimed at once.
        await create(writes, "cancelled")

    with_writes(settings, 1, work)
    assert count(db, Customer) == 1


def test_more_concurrent_writes_than_connections_all_answer(
    settings: Settings, db: Session
) -> None:
    async def work(writes: IdempotentWrites) -> None:
        # 50 at once over 2 connections: 48 wait for one, then each is lent at once.
        await asyncio.gather(*(create(writes, f"many-{number}") for number in range(50)))

    with_writes(settings, 2, work)
    assert count(db, Customer) == 50


def test_a_write_waits_for_a_connection_for_the_pools_bound_only(settings: Settings) -> None:
    async def run() -> None:
        writes = IdempotentWrites(settings.database, DatabaseTimeouts(pool_seconds=0.2), size=1)
        await writes.open()
        try:
            held = await claim(writes, "holding")
            with pytest.raises(PoolTimeout):
                await writes.claim("merchant-1", "waiting", "fingerprint")
            await held.close()
            await held.close()  # a second close gives nothing back twice
            await create(writes, "waiting")
        finally:
            await writes.close()

    run_async(run())


async def prepared_statements(writes: IdempotentWrites) -> dict[str, int]:
    """How often each write statement the pool's connection holds has run, by the text it was
    prepared in (PostgreSQL's own view:
    https://www.postgresql.org/docs/15/view-pg-prepared-statements.html)."""
    async with writes.pool.connection() as connection:
        cursor = await connection.execute(
            "SELECT name, statement, generic_plans + custom_plans FROM pg_prepared_statements"
            " WHERE name LIKE 'billing_write_%'"
        )
        return {f"{name}: {text}": runs for name, text, runs in await cursor.fetchall()}


def test_each_connection_prepares_its_statements_once_and_keeps_them(
    settings: Settings, db: Session
) -> None:
    async def work(writes: IdempotentWrites) -> None:
        for number in range(3):
            await create(writes, f"prepared-{number}")
        ran = await prepared_statements(writes)
        # The tenant's setting, the claim and the effect with its answer: parsed once, run
        # three times each.
        assert sorted(ran.values()) == [3, 3, 3], ran
        assert sum("INSERT INTO customers" in statement for statement in ran) == 1
        # A request rolled back, and a replay (a claim that finds the key taken), leave them
        # prepared: a prepared statement lasts for the session, whatever its transactions do.
        claimed = await claim(writes, "rolled-back")
        await claimed.close()
        assert isinstance(
            await writes.claim("merchant-1", "prepared-0", "fingerprint"), StoredResponse
        )
        await create(writes, "after")
        assert sorted((await prepared_statements(writes)).values()) == [1, 4, 6, 6]

    with_writes(settings, 1, work)
    assert count(db, Customer) == 4


def test_a_string_that_prepared_and_failed_leaves_no_connection_behind(
    settings: Settings, db: Session
) -> None:
    # The effect's first run on a connection carries its PREPARE. PostgreSQL keeps a statement
    # prepared even when a later statement of the same string fails (shown here: the pool
    # would otherwise hand on a connection whose record of its statements is wrong, and the
    # next PREPARE of the name would fail with "already exists").
    async def work(writes: IdempotentWrites) -> None:
        claimed = await claim(writes, "fails")
        row = customer_row(claimed, email=None)
        with pytest.raises(psycopg.errors.NotNullViolation):
            await claimed.respond(schemas.Customer.model_construct(**row), rows=[(Customer, row)])
        await claimed.close()
        assert claimed._connection.closed
        # The pool's replacement prepares afresh; the key is free again.
        await create(writes, "fails")

    with_writes(settings, 1, work)
    assert count(db, Customer) == 1


def test_a_claim_cancelled_while_it_prepares_leaves_no_connection_behind(
    settings: Settings, db: Session
) -> None:
    async def work(writes: IdempotentWrites) -> None:
        holder = await claim(writes, "held")
        # The second claim's string, on the pool's other (fresh) connection, prepares its
        # statements and then waits on the first claim's row lock until it is cancelled. The
        # connection must not come back to the pool with statements it has not recorded.
        with anyio.move_on_after(0.5):
            await writes.claim("merchant-1", "held", "fingerprint")
        await holder.close()
        # Both connections, the closed one replaced, then run claims without a PREPARE clash.
        first, second = await claim(writes, "next-1"), await claim(writes, "next-2")
        await first.close()
        await second.close()

    with_writes(settings, 2, work)
    assert count(db, IdempotencyKey) == 0


def test_postgresql_keeps_a_statement_prepared_in_a_failed_transaction(
    settings: Settings,
) -> None:
    # What the connection-closing rule above stands on, checked on the server itself.
    async def work(writes: IdempotentWrites) -> None:
        async with writes.pool.connection() as connection:
            cursor = psycopg.AsyncClientCursor(connection)
            with pytest.raises(psycopg.errors.DivisionByZero):
                await cursor.execute("BEGIN; PREPARE kept AS SELECT 1; SELECT 1 / 0")
            await connection.rollback()
            names = await (
                await connection.execute("SELECT name FROM pg_prepared_statements")
            ).fetchall()
            assert ("kept",) in names
            await connection.execute("DEALLOCATE kept")

    with_writes(settings, 1, work)
