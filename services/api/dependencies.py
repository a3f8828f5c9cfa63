"""What route handlers get injected: a database session, the gateway, the clock, the caller."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from services.billing.clock import Clock
from services.billing.gateway import PaymentGateway


@dataclass(frozen=True)
class Runtime:
    """The per-process resources the app was built with."""

    sessions: sessionmaker[Session]
    gateway: PaymentGateway
    clock: Clock
    webhook_secret: str


# Documents the scheme in OpenAPI; AuthenticationMiddleware has already checked the token.
_bearer = HTTPBearer(auto_error=False, description="HS256 JWT with `sub` and `exp` claims")


def runtime(request: Request) -> Runtime:
    value: Runtime = request.app.state.runtime
    return value


def database_session(request: Request) -> Iterator[Session]:
    # Handlers commit what they mean to keep; anything left uncommitted is rolled back here.
    with runtime(request).sessions() as session:
        yield session


def principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> str:
    value: str = request.state.principal
    return value


def idempotency_key(request: Request) -> str:
    # Present: IdempotencyMiddleware refuses POST requests without one.
    return request.headers.get("Idempotency-Key", "")


DatabaseSession = Annotated[Session, Depends(database_session)]
CurrentRuntime = Annotated[Runtime, Depends(runtime)]
Principal = Annotated[str, Depends(principal)]
