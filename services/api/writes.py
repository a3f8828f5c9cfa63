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
The statements are prepared with SQL's PREPARE, once per connection, in the string of their
first use, and run by name with EXECUTE, their parameters bound client-side as literals
(psycopg's ClientCursor.mogrify,
https://www.psycopg.org/psycopg3/docs/advanced/cursors.html#client-side-binding-cursors):
PostgreSQL parses and plans each once per connection rather than once per request. psycopg
itself prepares nothing on a ClientCursor (client_cursor.py, _get_prepared), so its rollbacks
send no DEALLOCATE ALL that would drop these (_preparing.py, PrepareManager.clear). Measured in
process (`python -m services.bench_profile --operation POST`, 2 cores, 64 at a time),
PostgreSQL's and Redis's CPU per POST went from 0.51-0.54 ms, every statement parsed and
planned, to 0.22-0.40 ms. Simple-protocol strings cost the API's process less CPU than
psycopg's pipeline mode, whose send/receive loop wakes the event loop on every writable socket
(services/api/reads.py measures both). Prepared statements belong to the server session, so
these connections must each be a session of their own: a pooler in transaction mode in
between (PgBouncer's, for one) would need the statements reworked.

The same two tenant walls as the ORM's sessions: every row written is stamped with the claim's
tenant (a row naming another is refused before anything is sent), and row-level security sees
the tenant set for the transaction. A claim that meets a connection that died in the pool
fails at once with nothing done, and runs again on another. A request that fails between its
claim and its commit is rolled back, claim included; one whose process dies is rolled back by
the server when the connection ends.
"""

from __future__ import annotations

import logging
import re
import weakref
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import psycopg
from fastapi import Depends, Request
from psycopg import sql
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
    CompiledStatement,
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
    from services.billing.db import DatabaseTimeouts
    from services.billing.models import TenantOwned

logger = logging.getLogger(__name__)

# Connections per server process for these writes (services/api/app.py counts the budget).
IDEMPOTENT_WRITE_CONNECTIONS = 8

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")


@dataclass(frozen=True)
class Prepared:
    """A statement each connection prepares once (PREPARE) and then runs by name (EXECUTE).

    Both go out as simple-protocol text, so a string of them stays one round trip, and
    PostgreSQL parses and plans the statement's text once per connection rather than per
    request (https://www.postgresql.org/docs/15/sql-prepare.html). A prepared statement lasts
    for the session: a rollback, or an error later in the same string, does not drop it
    (services/tests/test_writes.py shows both on the test server).
    """

    name: str
    # PREPARE's text: the request's parameters as $1, $2, ..., the fixed ones as literals.
    text: str
    parameters: tuple[str, ...]

    def execute(self, cursor: psycopg.AsyncClientCursor[Any], values: Mapping[str, Any]) -> str:
        """EXECUTE of the statement with these values, bound client-side as literals."""
        placeholders = ", ".join(["%s"] * len(self.parameters))
        return cursor.mogrify(
            f"EXECUTE {self.name}({placeholders})", [values[name] for name in self.parameters]
        )


_PREPARED: dict[str, Prepared] = {}


def _prepared(statement: CompiledStatement) -> Prepared:
    """The statement's Prepared, one per text (and so one name per text)."""
    if statement.sql not in _PREPARED:
        parameters: list[str] = []

        def placeholder(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None:  # %%, psycopg's escaped %
                return "%"
            if name in statement.fixed:
                return sql.Literal(statement.fixed[name]).as_string()
            if name not in parameters:
                parameters.append(name)
            return f"${parameters.index(name) + 1}"

        text = _PLACEHOLDER.sub(placeholder, statement.sql)
        name = f"billing_write_{len(_PREPARED)}"
        _PREPARED[statement.sql] = Prepared(name, text, tuple(parameters))
    return _PREPARED[statement.sql]


# The names each connection has prepared (PostgreSQL's pg_prepared_statements, as sent).
_PREPARED_ON: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], set[str]] = (
    weakref.WeakKeyDictionary()
)


async def _execute(
    connection: psycopg.AsyncConnection[Any],
    statements: Sequence[tuple[Prepared, Mapping[str, Any]]],
    *,
    before: str = "",
    after: str = "",
) -> psycopg.AsyncClientCursor[Any]:
    """Run the statements as one query string, one round trip, between `before` and `after`;
    the cursor is left on the last statement's result.

    A statement the connection has not prepared is prepared in the same string. If the string
    fails, the connection is closed (its pool replaces it) when it carried a PREPARE: which of
    its statements ran before the error is not known, nor so what the connection holds.
    """
    cursor = psycopg.AsyncClientCursor(connection)
    prepared = _PREPARED_ON.setdefault(connection, set())
    preparing = [statement.name for statement, _ in statements if statement.name not in prepared]
    parts = [before] if before else []
    for statement, values in statements:
        if statement.name in preparing:
            parts.append(f"PREPARE {statement.name} AS {statement.text}")
        parts.append(statement.execute(cursor, values))
    if after:
        parts.append(after)
    try:
        await cursor.execute("; ".join(parts))
    except BaseException:
        if preparing:
            # At once, with no await inside (psycopg's AsyncConnection.close): a request being
            # cancelled closes it too.
            await connection.close()
        raise
    prepared.update(preparing)
    # One result per statement of the string, in order (psycopg's Cursor.nextset()).
    for _ in range(len(parts) - (2 if after else 1)):
        cursor.nextset()
    return cursor


_SET_TENANT = _prepared(compile_statement(SET_TENANT))
_CLAIM = _prepared(compile_statement(CLAIM))
_EXISTING = _prepared(compile_statement(EXISTING))
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


_EFFECTS: dict[tuple[str, ...], Prepared] = {}


def _row_prefix(number: int) -> str:
    """Row `number`'s parameters in an effect's statement are named with this prefix."""
    return f"row{number}_"


def _renamed(prefix: str, match: re.Match[str]) -> str:
    """A placeholder of _PLACEHOLDER with its parameter's name prefixed (%% left as it is)."""
    name = match.group(1)
    return match.group(0) if name is None else f"%({prefix}{name})s"


def _effect(inserts: tuple[CompiledStatement, ...]) -> Prepared:
    """The answer's UPDATE with these INSERTs as its WITH clauses: one statement.

    PostgreSQL runs each INSERT of a WITH exactly once and to completion whether or not the
    UPDATE reads it (https://www.postgresql.org/docs/15/queries-with.html#QUERIES-WITH-MODIFYING).
    Row `n`'s parameters are named `row<n>_<column>`.
    """
    cache_key = tuple(insert.sql for insert in inserts)
    if cache_key not in _EFFECTS:
        clauses, fixed = [], dict(_STORE_ANSWER.fixed)
        for number, insert in enumerate(inserts):
            prefix = _row_prefix(number)
            text = _PLACEHOLDER.sub(partial(_renamed, prefix), insert.sql)
            clauses.append(f"row_{number} AS ({text})")
            fixed.update({prefix + name: value for name, value in insert.fixed.items()})
        text = f"WITH {', '.join(clauses)} {_STORE_ANSWER.sql}" if clauses else _STORE_ANSWER.sql
        _EFFECTS[cache_key] = _prepared(CompiledStatement(text, fixed))
    return _EFFECTS[cache_key]


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
        inserts = [self._row(model, values) for model, values in rows]
        statement = _effect(tuple(insert for insert, _ in inserts))
        values = answer_parameters(self.tenant_id, self.key, status, body)
        for number, (_, row_values) in enumerate(inserts):
            prefix = _row_prefix(number)
            values.update({prefix + name: value for name, value in row_values.items()})
        await _execute(self._connection, [(statement, values)], after="COMMIT")
        return Response(body, status, media_type=JSON)

    def _row(
        self, model: type[TenantOwned], values: Mapping[str, Any]
    ) -> tuple[CompiledStatement, dict[str, Any]]:
        """An INSERT of the row, stamped with the claim's tenant, and its values."""
        tenant = values.get("tenant_id", self.tenant_id)
        if tenant != self.tenant_id:
            raise TenantMismatchError(
                f"a write of tenant {self.tenant_id!r} may not insert a {model.__name__} "
                f"of tenant {tenant!r}"
            )
        complete = {**_scalar_defaults(model, values), **values, "tenant_id": self.tenant_id}
        return _insert(model, tuple(sorted(complete))), complete

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
        for attempt in range(self.attempts):
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
                if not self.runs_again(connection, attempt):
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
        statements = [(_SET_TENANT, parameters), (_CLAIM, parameters)]
        cursor = await _execute(connection, statements, before="BEGIN")
        row = await cursor.fetchone()
        return None if row is None else row[0]

    async def _existing(
        self, connection: psycopg.AsyncConnection[Any], fingerprint: str, parameters: dict[str, str]
    ) -> StoredResponse:
        """What another request left under the key: read, then COMMIT (it changed nothing)."""
        cursor = await _execute(connection, [(_EXISTING, parameters)], after="COMMIT")
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
