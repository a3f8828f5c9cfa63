"""What handlers get injected: the caller, a tenant's database session, the gateway, the clock.

Authentication, scopes and the rate limit are route dependencies, not middleware: they run
after routing, so an unknown path is a 404 and an unknown method a 405 whoever asks.
"""

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from services.api.ratelimit import RateLimiter
from services.api.reads import RowReader
from services.api.security import Principal, TokenRejectedError, TokenScope, TokenVerifier
from services.billing.clock import Clock
from services.billing.config import JwtSettings
from services.billing.db import async_tenant_session, tenant_session
from services.billing.errors import BillingError
from services.billing.gateway import PaymentGateway


@dataclass(frozen=True)
class Runtime:
    """The per-process resources the app was built with."""

    sessions: sessionmaker[Session]
    # Reads: asyncio sessions on the event loop, no worker thread; single rows in one round trip
    # (services/api/reads.py).
    reads: async_sessionmaker[AsyncSession]
    rows: RowReader
    gateway: PaymentGateway
    clock: Clock
    webhook_secret: str
    jwt: JwtSettings
    # Bearer tokens by jwt, remembered once accepted (services/api/security.py).
    tokens: TokenVerifier
    rate_limiter: RateLimiter


BEARER_SCHEME = "bearer"
_bearer = HTTPBearer(
    scheme_name=BEARER_SCHEME,
    auto_error=False,
    bearerFormat="JWT",
    description=(
        "HS256 JWT with claims iss, aud, sub, iat, exp (at most 24 h after iat), tenant and "
        "scope (space-separated: read, write, admin; each includes the ones before it)"
    ),
)
# Methods that only read; everything else needs the write scope.
_READ_METHODS = frozenset({"GET", "HEAD"})


class UnauthenticatedError(BillingError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, status=401)
        self.headers = {"WWW-Authenticate": "Bearer"}


class InsufficientScopeError(BillingError):
    def __init__(self, scope: TokenScope) -> None:
        super().__init__(
            "insufficient_scope", f"This operation needs a token with the {scope} scope", status=403
        )


def runtime(request: Request) -> Runtime:
    value: Runtime = request.app.state.runtime
    return value


# Dependencies that only compute are `async def`: FastAPI runs a plain `def` one in a worker
# thread, a hop each that costs more than the work.
async def current_runtime(request: Request) -> Runtime:
    return runtime(request)


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    """The caller a valid bearer token names; 401 otherwise."""
    if credentials is None:
        raise UnauthenticatedError("unauthenticated", "Send a bearer token")
    try:
        caller = runtime(request).tokens.verify(credentials.credentials)
    except TokenRejectedError as error:
        raise UnauthenticatedError(error.code, error.message) from None
    # Read by the access log.
    request.state.principal = caller
    return caller


async def authorize(
    request: Request, caller: Annotated[Principal, Depends(authenticate)]
) -> Principal:
    """Reads need the read scope, anything else the write scope."""
    needed = TokenScope.READ if request.method in _READ_METHODS else TokenScope.WRITE
    if not caller.allows(needed):
        raise InsufficientScopeError(needed)
    return caller


async def within_rate_limit(
    request: Request, caller: Annotated[Principal, Depends(authorize)]
) -> None:
    """Count the request against the caller's quota; the quota goes out as headers."""
    request.state.quota = await runtime(request).rate_limiter.take(caller.key)


async def require_admin(caller: Annotated[Principal, Depends(authenticate)]) -> None:
    if not caller.allows(TokenScope.ADMIN):
        raise InsufficientScopeError(TokenScope.ADMIN)


async def database_session(
    request: Request, caller: Annotated[Principal, Depends(authenticate)]
) -> AsyncIterator[Session]:
    """A session that sees only the caller's tenant (queries scoped, row-level security set).

    Making a Session does no I/O, so it is made here rather than in a worker thread. Handlers
    commit what they mean to keep; anything left uncommitted is rolled back on close, in a
    thread (I/O), shielded so that a client gone away cannot leave the connection checked out.
    After a commit, closing does no I/O (the connection went back to the pool, idle).
    """
    session = tenant_session(runtime(request).sessions, caller.tenant_id)
    try:
        yield session
    finally:
        if session.in_transaction():
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.close)
        else:
            session.close()


async def read_session(
    request: Request, caller: Annotated[Principal, Depends(authenticate)]
) -> AsyncIterator[AsyncSession]:
    """An asyncio session of the caller's tenant, for handlers that only read.

    Its transaction ends in COMMIT, not ROLLBACK: psycopg forgets its prepared statements on
    every rollback and sends DEALLOCATE ALL (psycopg/_connection_base.py, _rollback_gen), so a
    read that rolled back would cost two statements more and plan its query again next time.
    """
    async with async_tenant_session(runtime(request).reads, caller.tenant_id) as session:
        try:
            yield session
        except BillingError:
            # A refusal (404 and the like) after reads that succeeded: the transaction is sound.
            await session.commit()
            raise
        await session.commit()


Result = TypeVar("Result")


async def read(session: AsyncSession, work: Callable[[Session], Result]) -> Result:
    """Run `work` (sync ORM code) on the session's connection, from the event loop.

    A connection that died in the pool (a failover, a restarted server) fails its first
    statement; SQLAlchemy then drops it and every older pooled connection, and the read runs
    once more on a new one. Reads only: nothing was written that a second run could repeat.
    """
    try:
        return await session.run_sync(work)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
        await session.rollback()
        return await session.run_sync(work)


def system_session(request: Request) -> Iterator[Session]:
    """A session over every tenant, for the gateway's webhooks (no bearer token there)."""
    with runtime(request).sessions() as session:
        yield session


DatabaseSession = Annotated[Session, Depends(database_session)]
ReadSession = Annotated[AsyncSession, Depends(read_session)]
SystemSession = Annotated[Session, Depends(system_session)]
CurrentRuntime = Annotated[Runtime, Depends(current_runtime)]
CurrentPrincipal = Annotated[Principal, Depends(authenticate)]
# Router-level dependencies of every /v1 resource: authenticated, scope by method, rate limit.
AUTHORIZED = [Depends(within_rate_limit)]
# For an operation's decorator: the admin scope enforced, and named in the document.
ADMIN_ONLY: dict[str, Any] = {
    "dependencies": [Depends(require_admin)],
    "openapi_extra": {"x-required-scope": TokenScope.ADMIN.value},
}
