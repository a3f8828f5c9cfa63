"""Reads: one round trip for a row, the tenant walls kept, the tenant setting gone with the read;
and requests that meet pooled connections killed under them (a failover) answered on new ones."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import psycopg
import pytest

from services.api.reads import RowReader
from services.api.routes.customers import CUSTOMER as CUSTOMER_ROW
from services.billing.errors import NotFoundError
from services.billing.models import Customer
from services.tests.conftest import BillingClient, Servers

if TYPE_CHECKING:
    from services.billing.config import Settings

CUSTOMER = {"email": "read@example.com", "name": "Read", "payment_method": "pm_card_visa"}


def _terminate_service_connections(servers: Servers) -> int:
    """What a failover does to pooled connections: the server ends every one of them."""
    with psycopg.connect(servers.postgres.conninfo(admin=True), autocommit=True) as admin:
        cursor = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE usename = %s AND pid <> pg_backend_pid()",
            (servers.postgres.user,),
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def test_a_row_is_read_for_its_tenant_only(client: BillingClient, settings: Settings) -> None:
    created = client.post_new("/v1/customers", json=CUSTOMER).json()

    async def read() -> None:
        reader = RowReader(settings.database, size=1)
        await reader.open()
        try:
            mine = await reader.one(CUSTOMER_ROW, "merchant-1", uuid.UUID(created["id"]))
            assert mine.model_dump(mode="json") == created
            assert await reader.fetch(Customer, "merchant-2", uuid.UUID(created["id"])) is None
            with pytest.raises(NotFoundError) as missing:
                await reader.one(CUSTOMER_ROW, "merchant-2", uuid.UUID(created["id"]))
            assert missing.value.code == "customer_not_found"
            # Past psycopg's threshold of executions (5) on the one connection, the read is a
            # prepared statement: parsed and planned once.
            for _ in range(6):
                await reader.fetch(Customer, "merchant-1", uuid.UUID(created["id"]))
            async with reader.pool.connection() as connection:
                cursor = await connection.execute(
                    "SELECT count(*) FROM pg_prepared_statements "
                    "WHERE statement LIKE '%billing_read_customers%'"
                )
                prepared = await cursor.fetchone()
            assert prepared == (1,)
            # The setting lived as long as the read's transaction: the connection the reads
            # used (the pool holds one) carries no tenant into whatever runs on it next.
            async with reader.pool.connection() as connection:
                cursor = await connection.execute(
                    "SELECT current_setting('billing.tenant_id', true), count(*) FROM customers"
                )
                row = await cursor.fetchone()
            assert row is not None
            assert not row[0]
            # Row-level security fails closed without a tenant: not even the row just read.
            assert row[1] == 0
        finally:
            await reader.close()

    asyncio.run(read())


def test_requests_survive_connections_killed_in_the_pool(
    client: BillingClient, servers: Servers
) -> None:
    created = client.post_new("/v1/customers", json=CUSTOMER).json()
    # Every pooled connection has been used, so each one the server ends is a pooled one.
    for _ in range(30):
        assert client.get(f"/v1/customers/{created['id']}").status_code == 200
        assert client.get("/v1/customers").status_code == 200
    assert _terminate_service_connections(servers) > 0
    # No pre-ping: the first statement on a dead connection fails, and the read runs again.
    one = client.get(f"/v1/customers/{created['id']}")
    assert one.status_code == 200, one.text
    assert one.json() == created
    listed = client.get("/v1/customers")
    assert listed.status_code == 200, listed.text
    assert [c["id"] for c in listed.json()["data"]] == [created["id"]]
    # Writes' connections too: a POST's first statement (its idempotency claim) meets a dead
    # one, and claims again on a new one.
    for _ in range(20):
        assert client.post_new("/v1/customers", json=CUSTOMER).status_code == 201
    assert _terminate_service_connections(servers) > 0
    written = client.post_new("/v1/customers", json=CUSTOMER)
    assert written.status_code == 201, written.text


def test_more_concurrent_reads_than_connections_all_answer(
    client: BillingClient, settings: Settings
) -> None:
    created = client.post_new("/v1/customers", json=CUSTOMER).json()

    async def read_many() -> list[object]:
        reader = RowReader(settings.database, size=2)
        await reader.open()
        try:
            # 50 at once over 2 connections: 48 wait for one, none for long.
            return await asyncio.wait_for(
                asyncio.gather(
                    *(
                        reader.fetch(Customer, "merchant-1", uuid.UUID(created["id"]))
                        for _ in range(50)
                    )
                ),
                timeout=30,
            )
        finally:
            await reader.close()

    rows = asyncio.run(read_many())
    assert [row["id"] for row in rows if isinstance(row, dict)] == [uuid.UUID(created["id"])] * 50
