"""JWT bearer authentication for everything under /v1 except the gateway's webhooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jwt
from starlette.datastructures import Headers

from services.api.errors import error_response

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

PROTECTED_PREFIX = "/v1/"
# Webhooks authenticate by the gateway's signature instead.
PUBLIC_PREFIXES = ("/v1/webhooks/",)
ALGORITHM = "HS256"


def is_protected(path: str) -> bool:
    return path.startswith(PROTECTED_PREFIX) and not path.startswith(PUBLIC_PREFIXES)


class AuthenticationMiddleware:
    def __init__(self, app: ASGIApp, *, secret: str) -> None:
        self.app = app
        self._secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            await _refuse("unauthenticated", "Send a bearer token", scope, receive, send)
            return
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            await _refuse("token_expired", "The bearer token has expired", scope, receive, send)
            return
        except jwt.InvalidTokenError:
            await _refuse("token_invalid", "The bearer token is not valid", scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = str(claims["sub"])
        await self.app(scope, receive, send)


async def _refuse(code: str, message: str, scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(401, code, message, headers={"WWW-Authenticate": "Bearer"})
    await response(scope, receive, send)
