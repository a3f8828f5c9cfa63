"""One row of a tenant's table by id, in one round trip to PostgreSQL.

A read through the ORM costs four round trips (BEGIN, the tenant's set_config, the SELECT,
COMMIT), and on a loaded host each one's wake-ups cost more than the query. Here the four go
out together in psycopg's pipeline mode and are answered together: `commit()` inside a pipeline
queues COMMIT and then syncs (psycopg/_connection_base.py, _commit_gen;
https://www.psycopg.org/psycopg3/docs/advanced/pipeline.html). The same two walls hold as for
the ORM's reads: the statement names the tenant, and row-level security sees only the tenant
set for the transaction (set_config(..., true), SET LOCAL). The transaction commits, so psycopg
keeps its prepared statements (a rollback would discard them).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel
from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from services.billing.db import RECYCLE_SECONDS, DatabaseTimeouts
from services.billing.errors import NotFoundError

if TYPE_CHECKING:
    from services.billing.config import DatabaseSettings
    from services.billing.models import TenantOwned

_SET_TENANT = "SELECT set_config('billing.tenant_id', %(tenant)s, true)"
# Connections per server process for these reads.
READ_CONNECTIONS = 10
Schema = TypeVar("Schema", bound=BaseModel)


_STATEMENTS: dict[str, str] = {}


def _statement(model: type[TenantOwned]) -> str:
    """SELECT every column of the model's table by id and tenant, compiled once."""
    table = model.__table__  # type: ignore[attr-defined]
    if table.name not in _STATEMENTS:
        query = select(*table.columns).where(
            table.c.id == bindparam("id"), table.c.tenant_id == bindparam("tenant")
        )
        dialect = PGDialect_psycopg()  # type: ignore[no-untyped-call]
        _STATEMENTS[table.name] = str(query.compile(dialect=dialect))
    return _STATEMENTS[table.name]


class RowReader:
    """A fixed pool of psycopg's asyncio connections (psycopg_pool), for single-row reads.

    A connection comes back IDLE (the read commits); one returned broken is replaced by the
    pool, and one older than RECYCLE_SECONDS is closed (max_lifetime). No pre-ping: a read that
    meets a dead connection runs again on another.
    """

    def __init__(
        self,
        database: DatabaseSettings,
        timeouts: DatabaseTimeouts | None = None,
        *,
        size: int = READ_CONNECTIONS,
    ) -> None:
        timeouts = timeouts or DatabaseTimeouts()
        self.pool = AsyncConnectionPool(
            psycopg.conninfo.make_conninfo(
                host=database.host,
                port=database.port,
                dbname=database.name,
                user=database.user,
                password=database.password,
                application_name="billing",
                connect_timeout=timeouts.connect_seconds,
                options=timeouts.options(),
            ),
            min_size=size,
            max_size=size,
            timeout=timeouts.pool_seconds,
            max_lifetime=RECYCLE_SECONDS,
            open=False,
        )

    async def open(self) -> None:
        await self.pool.open()

    async def close(self) -> None:
        await self.pool.close()

    async def fetch(
        self, model: type[TenantOwned], tenant: str, row_id: uuid.UUID
    ) -> dict[str, Any] | None:
        """The tenant's row of `model` with this id, by column name; None if there is none."""
        statement = _statement(model)
        attempts = self.pool.max_size + 1
        for attempt in range(attempts):
            async with self.pool.connection() as connection:
                try:
                    async with connection.pipeline():
                        await connection.execute(_SET_TENANT, {"tenant": tenant})
                        cursor = connection.cursor(row_factory=dict_row)
                        await cursor.execute(statement, {"id": row_id, "tenant": tenant})
                        await connection.commit()
                        row: dict[str, Any] | None = await cursor.fetchone()
                        return row
                except psycopg.OperationalError:
                    # A connection that died in the pool (a failover, a restarted server):
                    # the pool replaces it, and the read runs again on another. After a
                    # failover every pooled one is dead, each failing at once: one more attempt
                    # than the pool holds reaches a new connection.
                    if not connection.broken or attempt == attempts - 1:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def one(
        self,
        model: type[TenantOwned],
        schema: type[Schema],
        tenant: str,
        row_id: uuid.UUID,
        *,
        resource: str,
    ) -> Schema:
        """The answer for one row: its schema, or 404 `<resource>_not_found`."""
        row = await self.fetch(model, tenant, row_id)
        if row is None:
            raise NotFoundError(resource, row_id)
        return schema.model_validate(row)
