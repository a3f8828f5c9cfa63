"""Bearer tokens: who calls, for which tenant, with which scopes.

A token names its tenant (the merchant whose rows it may touch), its subject (who acts) and its
scopes. It must carry `iss` and `aud` matching the API's settings, `iat` and `exp` no further
apart than MAX_TOKEN_LIFETIME, and be signed HS256 with a key of at least 32 bytes.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import jwt

from services.billing.models import TENANT_ID_PATTERN

if TYPE_CHECKING:
    from collections.abc import Callable

    from services.billing.config import JwtSettings

ALGORITHM = "HS256"
# A stolen token is useful for at most this long.
MAX_TOKEN_LIFETIME = timedelta(hours=24)
# Clocks of the issuer and the API may disagree a little.
CLOCK_SKEW = timedelta(seconds=30)
REQUIRED_CLAIMS = ("iss", "aud", "sub", "iat", "exp", "tenant", "scope")
_TENANT = re.compile(TENANT_ID_PATTERN)


class TokenScope(StrEnum):
    """What a token may do; each scope includes the ones below it."""

    READ = "read"  # list and read
    WRITE = "write"  # create and change customers and subscriptions, pay invoices
    ADMIN = "admin"  # the plan catalogue, voiding invoices


_INCLUDED = {
    TokenScope.READ: {TokenScope.READ},
    TokenScope.WRITE: {TokenScope.READ, TokenScope.WRITE},
    TokenScope.ADMIN: {TokenScope.READ, TokenScope.WRITE, TokenScope.ADMIN},
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a subject acting for a tenant, with the scopes the token grants."""

    tenant_id: str
    subject: str
    scopes: frozenset[TokenScope]

    @property
    def key(self) -> str:
        """What rate limits count by."""
        return f"{self.tenant_id}/{self.subject}"

    def allows(self, scope: TokenScope) -> bool:
        return scope in self.scopes


class TokenRejectedError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def mint_token(
    settings: JwtSettings,
    *,
    tenant: str,
    subject: str,
    scopes: str = "admin",
    lifetime: timedelta = timedelta(hours=1),
) -> str:
    """A token the API accepts, for local runs, benchmarks and tests (issuers mint their own)."""
    now = datetime.now(UTC)
    claims = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": subject,
        "tenant": tenant,
        "scope": scopes,
        "iat": now,
        "exp": now + lifetime,
    }
    return jwt.encode(claims, settings.secret, algorithm=ALGORITHM)


def verify_token(token: str, settings: JwtSettings) -> Principal:
    """The principal a token speaks for; TokenRejectedError says why it does not."""
    return _verify(token, settings)[0]


def _verify(token: str, settings: JwtSettings) -> tuple[Principal, int]:
    """The principal a token speaks for and its `exp` (seconds since the epoch)."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.secret,
            algorithms=[ALGORITHM],
            issuer=settings.issuer,
            audience=settings.audience,
            leeway=CLOCK_SKEW,
            options={"require": list(REQUIRED_CLAIMS)},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRejectedError("token_expired", "The bearer token has expired") from None
    except jwt.InvalidTokenError as error:
        message = f"The bearer token is not valid: {error}"
        raise TokenRejectedError("token_invalid", message) from None
    lifetime = timedelta(seconds=int(claims["exp"]) - int(claims["iat"]))
    if lifetime > MAX_TOKEN_LIFETIME:
        raise TokenRejectedError(
            "token_invalid",
            f"The bearer token lives longer than {int(MAX_TOKEN_LIFETIME.total_seconds())} s",
        )
    tenant = claims["tenant"]
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise TokenRejectedError("token_invalid", "The token's tenant claim is malformed")
    scope = claims["scope"]
    if not isinstance(scope, str):
        raise TokenRejectedError("token_invalid", "The token's scope claim must be a string")
    granted: set[TokenScope] = set()
    for name in scope.split():
        try:
            granted |= _INCLUDED[TokenScope(name)]
        except ValueError:
            raise TokenRejectedError("token_invalid", f"Unknown scope {name!r}") from None
    principal = Principal(tenant_id=tenant, subject=str(claims["sub"]), scopes=frozenset(granted))
    return principal, int(claims["exp"])


# Tokens a process remembers; past this many it forgets them all and starts again.
VERIFIED_TOKENS = 4096


class TokenVerifier:
    """verify_token with a memory: a token already accepted is not decoded and checked again.

    Clients send the same token on every request until it expires, and its signature check,
    base64 and JSON decoding cost about a tenth of a GET's CPU. Only accepted tokens are
    remembered (a refusal is decided again each time), each until its `exp`, stricter than the
    check itself (which allows CLOCK_SKEW past it): after that the token goes through
    verify_token again, which refuses it. A token accepted once stays valid until `exp`: the
    other time claims (`iat`, `nbf`) only become easier to meet as time passes, and the key,
    issuer and audience are fixed for the process. The memory is keyed by the whole token, so a
    token differing in any byte (a forged signature) is checked in full.
    """

    def __init__(
        self,
        settings: JwtSettings,
        *,
        size: int = VERIFIED_TOKENS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._size = size
        self._clock = clock
        self._verified: dict[str, tuple[Principal, int]] = {}

    def verify(self, token: str) -> Principal:
        """As verify_token; TokenRejectedError says why not."""
        known = self._verified.get(token)
        if known is not None:
            principal, expires = known
            if self._clock() < expires:
                return principal
            self._verified.pop(token, None)
        principal, expires = _verify(token, self._settings)
        if len(self._verified) >= self._size:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal
