"""What handlers get injected: a tenant's database session, the gateway, the clock, the caller."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from services.api.middleware.auth import Principal, TokenScope
from services.billing.clock import Clock
from services.billing.db import tenant_session
from services.billing.errors import BillingError
from services.billing.gateway import PaymentGateway


@dataclass(frozen=True)
class Runtime:
    """The per-process resources the app was built with."""

    sessions: sessionmaker[Session]
    gateway: PaymentGateway
    clock: Clock
    webhook_secret: str


# Documents the scheme in OpenAPI; AuthenticationMiddleware has already checked the token.
_bearer = HTTPBearer(
    auto_error=False,
    description=(
        "HS256 JWT with claims iss, aud, sub, iat, exp (at most 24 h after iat), tenant and "
        "scope (space-separated: read, write, admin; each includes the ones before it)"
    ),
)
# Methods that only read; everything else needs the write scope.
_READ_METHODS = frozenset({"GET", "HEAD"})


class InsufficientScopeError(BillingError):
    def __init__(self, scope: TokenScope) -> None:
        super().__init__(
            "insufficient_scope", f"This operation needs a token with the {scope} scope", status=403
        )


def runtime(request: Request) -> Runtime:
    value: Runtime = request.app.state.runtime
    return value


def principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    value: Principal = request.state.principal
    return value


def authorize(request: Request, caller: Annotated[Principal, Depends(principal)]) -> Principal:
    """Router-wide: reads need the read scope, anything else the write scope."""
    needed = TokenScope.READ if request.method in _READ_METHODS else TokenScope.WRITE
    if not caller.allows(needed):
        raise InsufficientScopeError(needed)
    return caller


def require_admin(caller: Annotated[Principal, Depends(principal)]) -> None:
    if not caller.allows(TokenScope.ADMIN):
        raise InsufficientScopeError(TokenScope.ADMIN)


def database_session(
    request: Request, caller: Annotated[Principal, Depends(principal)]
) -> Iterator[Session]:
    """A session that sees only the caller's tenant (queries scoped, row-level security set)."""
    # Handlers commit what they mean to keep; anything left uncommitted is rolled back here.
    with tenant_session(runtime(request).sessions, caller.tenant_id) as session:
        yield session


def system_session(request: Request) -> Iterator[Session]:
    """A session over every tenant, for the gateway's webhooks (no bearer token there)."""
    with runtime(request).sessions() as session:
        yield session


def idempotency_key(request: Request) -> str:
    # Present: IdempotencyMiddleware refuses POST requests without one.
    return request.headers.get("Idempotency-Key", "")


DatabaseSession = Annotated[Session, Depends(database_session)]
SystemSession = Annotated[Session, Depends(system_session)]
CurrentRuntime = Annotated[Runtime, Depends(runtime)]
CurrentPrincipal = Annotated[Principal, Depends(principal)]
# Router-level dependencies: every route of a /v1 resource router is authorized by method.
AUTHORIZED = [Depends(authorize)]
ADMIN_ONLY = [Depends(require_admin)]
