"""Engine and sessions for the billing database, each session scoped to a tenant or to all.

A tenant's session (the API's, per request) adds `tenant_id = <tenant>` to every ORM query and
bulk UPDATE/DELETE on a tenant-owned table, stamps the tenant on the rows it creates, and sets
`billing.tenant_id` in each transaction for row-level security. A system session (the worker,
the gateway's webhooks, readiness) sets `billing.all_tenants` instead. A session made without
either sees no tenant's rows at all: the database's policy fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import (
    ORMExecuteState,
    Session,
    SessionTransaction,
    sessionmaker,
    with_loader_criteria,
)

from services.billing.models import TenantOwned

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy.sql import ClauseElement
    from sqlalchemy.sql.compiler import SQLCompiler

    from services.billing.config import DatabaseSettings

# Keys of Session.info.
TENANT = "tenant_id"
ALL_TENANTS = "all_tenants"
# The tenant row-level security sees, for the transaction only (SET LOCAL): a pooled connection
# never carries one request's tenant into the next. The ORM's sessions run it as it is;
# services/api/writes.py compiles it for psycopg (compile_statement).
SET_TENANT = text("SELECT set_config('billing.tenant_id', :tenant, true)")


class TenantMismatchError(RuntimeError):
    """A tenant's session was about to write a row of another tenant."""


@dataclass(frozen=True)
class DatabaseTimeouts:
    """Bounds on every wait a service can meet in PostgreSQL; none is unlimited.

    Server settings, sent as startup options so they hold from a connection's first statement
    (https://www.postgresql.org/docs/15/runtime-config-client.html#GUC-STATEMENT-TIMEOUT).
    """

    # libpq's connect_timeout, whole seconds (https://www.postgresql.org/docs/15/libpq-connect.html).
    connect_seconds: int = 5
    statement: str = "10s"
    # A request that meets a held row lock answers 409 after this rather than queueing.
    lock: str = "3s"
    # Ends a transaction left open (a leaked session, a stuck handler) and frees its locks; it
    # must outlast the gateway's timeout, since a request may call the gateway mid-transaction.
    idle_in_transaction: str = "60s"
    # How long a request waits for a pooled connection before failing.
    pool_seconds: float = 5.0

    def options(self) -> str:
        return " ".join(
            [
                # Every session in UTC whatever the server, role or database default: timestamps
                # come back in UTC and SQL date arithmetic is done on the UTC calendar.
                "-c timezone=UTC",
                f"-c statement_timeout={self.statement}",
                f"-c lock_timeout={self.lock}",
                f"-c idle_in_transaction_session_timeout={self.idle_in_transaction}",
            ]
        )


# The worker's transactions are batches, and a tenant's renewals queue on its invoice-number
# row: it may wait longer than a request should, but never without a bound.
WORKER_TIMEOUTS = DatabaseTimeouts(statement="60s", lock="30s")


# Connections older than this are replaced when next taken from the pool: a failover or a
# network device that drops idle connections then costs no request an error.
RECYCLE_SECONDS = 1800


def _engine_arguments(
    pool_size: int, overflow: int | None, timeouts: DatabaseTimeouts, *, pre_ping: bool
) -> dict[str, Any]:
    return {
        "pool_size": pool_size,
        # Connections past pool_size are closed when they come back, so load that keeps more
        # in use opens a connection per request: a SCRAM login costs both sides milliseconds of
        # CPU. The API's pools take none and queue for at most pool_seconds instead.
        "max_overflow": pool_size if overflow is None else overflow,
        "pool_timeout": timeouts.pool_seconds,
        # RDS and Cloud SQL fail over by moving the endpoint; stale pooled connections then
        # error. With pre_ping each checkout first asks the server (a round trip per request);
        # without it the first statement on a dead connection fails, and SQLAlchemy then
        # invalidates every connection the pool holds from before that moment
        # (https://docs.sqlalchemy.org/en/20/core/pooling.html#disconnect-handling-optimistic).
        "pool_pre_ping": pre_ping,
        "pool_recycle": RECYCLE_SECONDS,
        # Errors name the statement but never its parameters: those carry customers' emails
        # and names into logs and tracebacks.
        "hide_parameters": True,
        "connect_args": {
            "application_name": "billing",
            "connect_timeout": timeouts.connect_seconds,
            "options": timeouts.options(),
        },
    }


def create_database_engine(
    database: DatabaseSettings,
    *,
    pool_size: int = 10,
    timeouts: DatabaseTimeouts = DatabaseTimeouts(),
    pre_ping: bool = True,
    overflow: int | None = None,
) -> Engine:
    return create_engine(
        database.url(), **_engine_arguments(pool_size, overflow, timeouts, pre_ping=pre_ping)
    )


def create_async_database_engine(
    database: DatabaseSettings,
    *,
    pool_size: int = 10,
    timeouts: DatabaseTimeouts = DatabaseTimeouts(),
) -> AsyncEngine:
    """The API's reads: psycopg's asyncio connections, a fixed number of them, no pre-ping
    (reads retry instead)."""
    url = database.url().set(drivername="postgresql+psycopg_async")
    return create_async_engine(url, **_engine_arguments(pool_size, 0, timeouts, pre_ping=False))


def connection_pool(
    database: DatabaseSettings, size: int, timeouts: DatabaseTimeouts | None = None
) -> AsyncConnectionPool:
    """A fixed pool of psycopg's asyncio connections (psycopg_pool), opened by its owner.

    Connections are in autocommit: their users begin and end transactions in their own SQL,
    and one comes back IDLE. One returned broken is replaced by the pool, and one older than
    RECYCLE_SECONDS is closed (max_lifetime). No pre-ping: a request that meets a dead
    connection with its first statement runs again on another.
    """
    timeouts = timeouts or DatabaseTimeouts()
    return AsyncConnectionPool(
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
        kwargs={"autocommit": True},
        open=False,
    )


class PooledConnections:
    """Owns a connection_pool of `size` connections, opened and closed with the app."""

    def __init__(
        self, database: DatabaseSettings, timeouts: DatabaseTimeouts | None = None, *, size: int
    ) -> None:
        self.pool = connection_pool(database, size, timeouts)

    @property
    def attempts(self) -> int:
        """Tries for a request's first statement. After a failover every pooled connection is
        dead, each failing at once: one more try than the pool holds reaches a new one."""
        return self.pool.max_size + 1

    def runs_again(self, connection: psycopg.AsyncConnection[Any], attempt: int) -> bool:
        """Whether a first statement that failed on `connection` (try `attempt`, from 0) runs
        again on another: only when the connection died in the pool (a failover, a restarted
        server), so nothing was done, and tries are left. The pool replaces a connection
        returned broken (psycopg_pool/pool_async.py, _return_connection)."""
        return connection.broken and attempt < self.attempts - 1

    async def open(self) -> None:
        await self.pool.open()

    async def close(self) -> None:
        await self.pool.close()


@dataclass(frozen=True)
class CompiledStatement:
    """A SQLAlchemy statement compiled once for psycopg: its text, and the values it fixes."""

    sql: str
    fixed: dict[str, Any]

    def parameters(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.fixed, **values}


def compile_statement(
    statement: ClauseElement, column_keys: Sequence[str] | None = None
) -> CompiledStatement:
    """The statement in psycopg's parameter style (%(name)s), named parameters left to fill."""
    dialect = PGDialect_psycopg()  # type: ignore[no-untyped-call]
    compiled = cast("SQLCompiler", statement.compile(dialect=dialect, column_keys=column_keys))
    binds = compiled.binds.items()
    fixed = {name: bind.effective_value for name, bind in binds if not bind.required}
    return CompiledStatement(str(compiled), fixed)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """System sessions, which see every tenant; tenant_session() narrows one to a tenant."""
    # Objects stay readable after commit: handlers serialize them after the transaction ends.
    return sessionmaker(engine, expire_on_commit=False, info={ALL_TENANTS: True})


def tenant_session(sessions: sessionmaker[Session], tenant_id: str) -> Session:
    """A session that reads and writes only this tenant's rows."""
    return sessions(info={TENANT: tenant_id, ALL_TENANTS: False})


def async_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Asyncio sessions; each wraps a Session, so the events below scope it just the same."""
    return async_sessionmaker(engine, expire_on_commit=False, info={ALL_TENANTS: True})


def async_tenant_session(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str
) -> AsyncSession:
    """An asyncio session that reads and writes only this tenant's rows."""
    return sessions(info={TENANT: tenant_id, ALL_TENANTS: False})


@event.listens_for(Session, "after_begin")
def _set_row_security(session: Session, _: SessionTransaction, connection: Connection) -> None:
    tenant = session.info.get(TENANT)
    if tenant is not None:
        connection.execute(SET_TENANT, {"tenant": tenant})
    elif session.info.get(ALL_TENANTS):
        connection.execute(text("SELECT set_config('billing.all_tenants', 'on', true)"))


@event.listens_for(Session, "do_orm_execute")
def _scope_to_tenant(state: ORMExecuteState) -> None:
    # SQLAlchemy's documented pattern for global criteria:
    # https://docs.sqlalchemy.org/en/20/orm/session_events.html#adding-global-where-on-criteria
    tenant = state.session.info.get(TENANT)
    if tenant is None or state.is_column_load or state.is_relationship_load:
        return
    if state.is_select or state.is_update or state.is_delete:
        state.statement = state.statement.options(
            with_loader_criteria(
                TenantOwned, lambda owned: owned.tenant_id == tenant, include_aliases=True
            )
        )


@event.listens_for(Session, "before_flush")
def _stamp_tenant(session: Session, _: Any, __: Any) -> None:
    tenant = session.info.get(TENANT)
    if tenant is None:
        return
    for row in (*session.new, *session.dirty):
        if not isinstance(row, TenantOwned):
            continue
        # None until stamped: the column is NOT NULL, the attribute is not yet.
        current: str | None = row.tenant_id
        if current is None:
            row.tenant_id = tenant
        elif current != tenant:
            raise TenantMismatchError(
                f"a session of tenant {tenant!r} may not write a {type(row).__name__} "
                f"of tenant {current!r}"
            )
