"""Idempotent writes on the event loop: claim, effect, stored answer and COMMIT in two round trips.

The same record and the same guarantees as services/api/idempotency.py (read its docstring),
without worker threads or the ORM: one of psycopg's asyncio connections carries one transaction
from the claim to the commit, in two query strings, each one round trip:

1. BEGIN, the tenant's set_config(..., true) and the claim, an INSERT ... ON CONFLICT that
   returns the transaction's now() when it took the key. Its answer is needed before anything
   else is done: the gateway is called, and the request's body validated, only once the key is
   ours.
2. The effect's rows and the stored answer (an UPDATE of the claim, the rows' INSERTs its WITH
   clauses: one statement), then COMMIT. The rows carry the claim's now() for their
   server-side timestamps, so the answer is known before they are written and nothing has to
   come back.

Each string goes out in the simple query protocol on a connection in autocommit (psycopg sends
no BEGIN of its own). PostgreSQL runs a string's statements in order and stops at the first
error, and a BEGIN among them opens a transaction that outlives the string
(https://www.postgresql.org/docs/15/protocol-flow.html#PROTOCOL-FLOW-MULTI-STATEMENT).
Parameters are bound client-side, as literals (psycopg's ClientCursor.mogrify,
https://www.psycopg.org/psycopg3/docs/advanced/cursors.html#client-side-binding-cursors): no
statement is prepared, so a rollback costs no DEALLOCATE ALL and no planning later. This costs
the API's process less CPU than psycopg's pipeline mode, whose send/receive loop wakes the
event loop on every writable socket (services/api/reads.py measures both).

The same two tenant walls as the ORM's sessions: every row written is stamped with the claim's
tenant (a row naming another is refused before anything is sent), and row-level security sees
the tenant set for the transaction. A claim that meets a connection that died in the pool
fails at once with nothing done, and runs again on another. A request that fails between its
claim and its commit is rolled back, claim included; one whose process dies is rolled back by
the server when the connection ends.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import psycopg
from fastapi import Depends, Request
from psycopg.pq import TransactionStatus
from starlette.responses import Response

from services.api.dependencies import CurrentPrincipal
from services.api.idempotency import (
    CLAIM,
    EXISTING,
    JSON,
    STORE_ANSWER,
    IdempotencyKeyHeader,
    StoredResponse,
    answer_cache,
    answer_parameters,
    claim_parameters,
    in_progress,
    keyed_request,
    stored_answer,
)
from services.billing.db import (
    SET_TENANT,
    PooledConnections,
    TenantMismatchError,
    compile_statement,
)
from services.billing.locks import LOCK_NOT_AVAILABLE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence
    from datetime import datetime

    from psycopg_pool import AsyncConnectionPool
    from pydantic import BaseModel

    from services.billing.config import DatabaseSettings
    from services.billing.db import CompiledStatement, DatabaseTimeouts
    from services.billing.models import TenantOwned

logger = logging.getLogger(__name__)

# Connections per server process for these writes (services/api/app.py counts the budget).
IDEMPOTENT_WRITE_CONNECTIONS = 8

_CLAIM = compile_statement(CLAIM)
_BEGIN_AND_CLAIM = f"BEGIN; {SET_TENANT}; {_CLAIM.sql}"
_EXISTING = compile_statement(EXISTING)
_STORE_ANSWER = compile_statement(STORE_ANSWER)
_INSERTS: dict[tuple[str, tuple[str, ...]], CompiledStatement] = {}

Row = tuple[type["TenantOwned"], "Mapping[str, Any]"]


def _insert(model: type[TenantOwned], columns: tuple[str, ...]) -> CompiledStatement:
    """INSERT of these columns of the model's table, compiled once per column set."""
    table = model.__table__  # type: ignore[attr-defined]
    cache_key = (table.name, columns)
    if cache_key not in _INSERTS:
        # Columns left out must not need a value computed in Python: the text cannot run it.
        for column in table.columns:
            default = column.default
            if column.key not in columns and default is not None and not default.is_scalar:
                raise ValueError(f"{table.name}.{column.key} needs a value")
        _INSERTS[cache_key] = compile_statement(table.insert(), column_keys=columns)
    return _INSERTS[cache_key]


def _scalar_defaults(model: type[TenantOwned], given: Mapping[str, Any]) -> dict[str, Any]:
    table = model.__table__  # type: ignore[attr-defined]
    return {
        column.key: column.default.arg
        for column in table.columns
        if column.key not in given and column.default is not None and column.default.is_scalar
    }


# What a rollback ends; a connection left ACTIVE (mid-query) is the pool's to close.
_OPEN_TRANSACTION = frozenset({TransactionStatus.INTRANS, TransactionStatus.INERROR})


async def _give_back(pool: AsyncConnectionPool, connection: psycopg.AsyncConnection[Any]) -> None:
    """Return the connection to its pool, its transaction rolled back if one is open.

    Shielded from cancellation: a request cancelled mid-way (the server stopping) still gives
    its connection back, rather than leaving the pool a connection short. One that broke, or
    was left mid-query, is put back as it is: the pool closes it and opens another
    (psycopg_pool/pool_async.py, _return_connection and _reset_connection).
    """
    with anyio.CancelScope(shield=True):
        try:
            status = connection.info.transaction_status
            if not connection.broken and status in _OPEN_TRANSACTION:
                await connection.rollback()
        except psycopg.Error:
            logger.warning("rollback failed; the connection is discarded")
        finally:
            await pool.putconn(connection)


class ClaimedKey:
    """The request's key, claimed in the transaction its effect and answer will commit in."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        connection: psycopg.AsyncConnection[Any],
        tenant_id: str,
        key: str,
        claimed_at: datetime,
    ) -> None:
        self._pool = pool
        self._closed = False
        self._connection = connection
        self.tenant_id = tenant_id
        self.key = key
        # The transaction's now(): what server-side defaults would stamp on its rows.
        self.claimed_at = claimed_at

    async def respond(
        self, payload: BaseModel, *, status: int = 200, rows: Sequence[Row] = ()
    ) -> Response:
        """Write the rows and the answer, commit them together (one round trip), answer."""
        body = payload.model_dump_json().encode()
        cursor = psycopg.AsyncClientCursor(self._connection)
        inserts = [cursor.mogrify(*self._row(model, values)) for model, values in rows]
        answer = answer_parameters(self.tenant_id, self.key, status, body)
        store = cursor.mogrify(_STORE_ANSWER.sql, answer)
        # One statement for PostgreSQL to parse and plan: the rows' INSERTs are WITH clauses of
        # the answer's UPDATE, each run exactly once and to completion whether or not the UPDATE
        # reads them (https://www.postgresql.org/docs/15/queries-with.html#QUERIES-WITH-MODIFYING).
        effects = ", ".join(f"row_{number} AS ({sql})" for number, sql in enumerate(inserts))
        statement = f"WITH {effects} {store}" if inserts else store
        await cursor.execute(f"{statement}; COMMIT")
        return Response(body, status, media_type=JSON)

    def _row(self, model: type[TenantOwned], values: Mapping[str, Any]) -> tuple[str, Any]:
        """An INSERT of the row, stamped with the claim's tenant."""
        tenant = values.get("tenant_id", self.tenant_id)
        if tenant != self.tenant_id:
            raise TenantMismatchError(
                f"a write of tenant {self.tenant_id!r} may not insert a {model.__name__} "
                f"of tenant {tenant!r}"
            )
        complete = {**_scalar_defaults(model, values), **values, "tenant_id": self.tenant_id}
        statement = _insert(model, tuple(sorted(complete)))
        return statement.sql, statement.parameters(complete)

    async def close(self) -> None:
        """Give the connection back; a transaction not committed is rolled back first. Once."""
        if not self._closed:
            self._closed = True
            await _give_back(self._pool, self._connection)


class IdempotentWrites(PooledConnections):
    """A fixed pool of psycopg's asyncio connections (services.billing.db.connection_pool),
    each lent to one idempotent request from its claim to its commit."""

    def __init__(
        self,
        database: DatabaseSettings,
        timeouts: DatabaseTimeouts | None = None,
        *,
        size: int = IDEMPOTENT_WRITE_CONNECTIONS,
    ) -> None:
        super().__init__(database, timeouts, size=size)

    async def claim(
        self, tenant_id: str, key: str, fingerprint: str
    ) -> ClaimedKey | StoredResponse:
        """The key claimed for this request, or the answer it already holds.

        Raises IdempotencyError when the key is in use (lock_timeout spent waiting on another
        request's claim, or a claim not yet answered) or was used for another request.
        """
        parameters = claim_parameters(tenant_id, key, fingerprint)
        # After a failover every pooled connection is dead, each failing at once: one more
        # attempt than the pool holds reaches a new connection.
        attempts = self.pool.max_size + 1
        for attempt in range(attempts):
            connection = await self.pool.getconn()
            try:
                claimed_at = await self._claim(connection, parameters)
            except psycopg.OperationalError as error:
                await _give_back(self.pool, connection)
                if error.sqlstate == LOCK_NOT_AVAILABLE:
                    # Waited lock_timeout on another transaction's uncommitted claim of the key
                    # ("waiting for a lock" includes waiting for the inserting transaction:
                    # https://www.postgresql.org/docs/15/runtime-config-client.html).
                    raise in_progress() from error
                # A connection that died in the pool (a failover, a restarted server): nothing
                # was done, and the pool replaces it (psycopg_pool discards a connection
                # returned closed: pool_async.py, _return_connection).
                if not connection.broken or attempt == attempts - 1:
                    raise
                continue
            except BaseException:
                await _give_back(self.pool, connection)
                raise
            if claimed_at is not None:
                return ClaimedKey(self.pool, connection, tenant_id, key, claimed_at)
            try:
                return await self._existing(connection, fingerprint, parameters)
            finally:
                await _give_back(self.pool, connection)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _claim(
        self, connection: psycopg.AsyncConnection[Any], parameters: dict[str, str]
    ) -> datetime | None:
        cursor = psycopg.AsyncClientCursor(connection)
        await cursor.execute(_BEGIN_AND_CLAIM, _CLAIM.parameters(parameters))
        # The results of BEGIN and of set_config come first; the claim's is the third.
        cursor.nextset()
        cursor.nextset()
        row = await cursor.fetchone()
        return None if row is None else row[0]

    async def _existing(
        self, connection: psycopg.AsyncConnection[Any], fingerprint: str, parameters: dict[str, str]
    ) -> StoredResponse:
        """What another request left under the key: read, then COMMIT (it changed nothing)."""
        cursor = psycopg.AsyncClientCursor(connection)
        await cursor.execute(f"{cursor.mogrify(_EXISTING.sql, parameters)}; COMMIT")
        row = await cursor.fetchone()
        if row is None:  # pragma: no cover - the claim met the row, and it is locked since
            raise AssertionError("the conflicting key vanished")
        return stored_answer(fingerprint, *row)


async def claim_request(request: Request, tenant_id: str, key: str) -> ClaimedKey:
    """Claim the request's key; raises the answer the key already has (StoredResponse), or
    IdempotencyError. The cache is read first, and fed with what PostgreSQL answered."""
    keyed = await keyed_request(request, tenant_id, key)
    writes: IdempotentWrites = request.app.state.writes
    claimed = await writes.claim(tenant_id, key, keyed.fingerprint)
    if isinstance(claimed, StoredResponse):
        await answer_cache(request).put(keyed.cache_key, claimed)
        raise claimed
    return claimed


async def claimed_key(
    request: Request, key: IdempotencyKeyHeader, caller: CurrentPrincipal
) -> AsyncIterator[ClaimedKey]:
    """The request's key claimed on an asyncio connection, or the answer it already has.

    The handler commits through ClaimedKey.respond; if it raises instead (a refusal, the
    body's validation, a gateway error), the claim is rolled back with whatever was done, and
    the key is free again. FastAPI runs this exit shielded from cancellation
    (fastapi/concurrency.py, _asynccontextmanager_with_shielded_exit).
    """
    claimed = await claim_request(request, caller.tenant_id, key)
    try:
        yield claimed
    finally:
        await claimed.close()


# scope="function": the connection goes back to the pool when the handler returns, before the
# answer is sent (https://fastapi.tiangolo.com/tutorial/dependencies/dependencies-with-yield/).
ClaimedWrite = Annotated[ClaimedKey, Depends(claimed_key, scope="function")]
