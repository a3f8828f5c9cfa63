"""One row of a tenant's table by id, in one round trip and one prepared statement.

A read through the ORM costs four round trips (BEGIN, the tenant's set_config, the SELECT,
COMMIT), and on a loaded host each one's wake-ups cost more than the query. Here the read is one
statement on a connection in autocommit, `SELECT * FROM billing_read_<table>(tenant, id)`
(migration 0008): PostgreSQL runs it as its own transaction, in which the function sets the
tenant (set_config(..., true), SET LOCAL) and then selects the row. The same two walls hold as
for the ORM's reads: the statement names the tenant, and row-level security sees only the
tenant set for the transaction, which ends with the statement. psycopg prepares the statement
after its fifth execution on a connection, and the function keeps its SELECT's plan.

Measured on 2 cores, 64 concurrent reads over 10 connections, the API's CPU and PostgreSQL's
per read: this statement 0.10 and 0.07-0.10 ms; the tenant's setting and the SELECT as one
simple-protocol query string (which PostgreSQL also runs as one transaction) 0.12-0.15 and
0.11 ms, parsed and planned each time; the four statements in psycopg's pipeline mode 0.26
and 0.18 ms (its send/receive loop wakes on every writable socket); a bare prepared SELECT,
which could not set the tenant, 0.07-0.10 and 0.03-0.06 ms.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

from services.billing.db import PooledConnections
from services.billing.errors import NotFoundError

if TYPE_CHECKING:
    from services.billing.config import DatabaseSettings
    from services.billing.db import DatabaseTimeouts
    from services.billing.models import TenantOwned

# Connections per server process for these reads.
READ_CONNECTIONS = 10
Schema = TypeVar("Schema", bound=BaseModel)


_STATEMENTS: dict[str, str] = {}


@dataclass(frozen=True)
class SingleRow(Generic[Schema]):
    """One resource read by id: the tenant's row of `model`, answered as `schema`.

    `GET /v1/<resources>/{id}` routes declare one; services/api/fast.py serves them too.
    """

    model: type[TenantOwned]
    schema: type[Schema]
    # Names the 404's code and message: `<resource>_not_found`.
    resource: str


def _statement(model: type[TenantOwned]) -> str:
    """The model's table's read function (migration 0008) called with the tenant and the id."""
    table = model.__table__  # type: ignore[attr-defined]
    if table.name not in _STATEMENTS:
        # The name is the table's own, from the models: nothing a request supplies.
        _STATEMENTS[table.name] = f"SELECT * FROM billing_read_{table.name}(%(tenant)s, %(id)s)"  # noqa: S608
    return _STATEMENTS[table.name]


class RowReader(PooledConnections):
    """A fixed pool of psycopg's asyncio connections (services.billing.db.connection_pool), for
    single-row reads: autocommit, no pre-ping, so a read that meets a dead connection runs again
    on another."""

    def __init__(
        self,
        database: DatabaseSettings,
        timeouts: DatabaseTimeouts | None = None,
        *,
        size: int = READ_CONNECTIONS,
    ) -> None:
        super().__init__(database, timeouts, size=size)
        # Reads wait here, not in the pool, when every connection is lent: psycopg_pool's
        # getconn then waits through asyncio.wait_for and a condition (psycopg_pool/
        # pool_async.py, AsyncClient.wait), which in Python 3.11 makes a task per waiter; a
        # semaphore the pool's size costs one future, and the pool then lends at once.
        # In process, 64 concurrent GETs over 10 connections: 0.21-0.23 ms of CPU per GET
        # against 0.23-0.27 ms.
        self._lendable = asyncio.Semaphore(size)

    async def fetch(
        self, model: type[TenantOwned], tenant: str, row_id: uuid.UUID
    ) -> dict[str, Any] | None:
        """The tenant's row of `model` with this id, by column name; None if there is none."""
        statement = _statement(model)
        for attempt in range(self.attempts):
            # getconn and putconn rather than the pool's connection(): that one also enters the
            # connection's own context, whose exit commits (a no-op in autocommit that still
            # takes the connection's lock), about 2% of a GET's CPU under the benchmark's load.
            # putconn closes a connection left broken or mid-query (psycopg_pool/pool_async.py,
            # _return_connection), as the context's exit did.
            async with self._lendable:
                connection = await self.pool.getconn()
                try:
                    cursor = connection.cursor(row_factory=dict_row)
                    await cursor.execute(statement, {"id": row_id, "tenant": tenant})
                    row: dict[str, Any] | None = await cursor.fetchone()
                except psycopg.OperationalError:
                    if not self.runs_again(connection, attempt):
                        raise
                else:
                    return row
                finally:
                    await self.pool.putconn(connection)
        raise AssertionError("unreachable")  # pragma: no cover

    async def one(self, spec: SingleRow[Schema], tenant: str, row_id: uuid.UUID) -> Schema:
        """The answer for one row: its schema, or 404 `<resource>_not_found`."""
        row = await self.fetch(spec.model, tenant, row_id)
        if row is None:
            raise NotFoundError(spec.resource, row_id)
        return spec.schema.model_validate(row)
