"""A ceiling on request bodies, enforced while they stream in."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from services.api.errors import error_response

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Far above any valid request (the largest is a customer: a few hundred bytes).
MAX_BODY_BYTES = 1024 * 1024


class BodyLimitMiddleware:
    """413 for a body over the limit: refused unread if declared so, else cut off mid-stream."""

    def __init__(self, app: ASGIApp, *, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self._limit:
            await self._too_large()(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._limit:
                    # FastAPI re-raises HTTPException from body reading; the app's handler
                    # turns it into the usual error body.
                    raise HTTPException(413, f"Request bodies are limited to {self._limit} bytes")
            return message

        await self.app(scope, limited, send)

    def _too_large(self) -> ASGIApp:
        return error_response(
            413, "payload_too_large", f"Request bodies are limited to {self._limit} bytes"
        )
