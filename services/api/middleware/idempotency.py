"""Idempotency keys on every POST: one execution per key, replayed answers, reuse rejected.

The first request with a key claims it in Redis, runs, and stores its response; a retry with
the same key and body gets that response again (with Idempotent-Replayed: true) instead of a
second execution. Keys are scoped to the caller's tenant and kept for 24 hours.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
from typing import TYPE_CHECKING

import redis.asyncio
import redis.exceptions
from starlette.datastructures import Headers

from services.api.errors import error_response
from services.api.middleware.auth import is_protected

if TYPE_CHECKING:
    from starlette.responses import JSONResponse
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_BODY_BYTES = 1024 * 1024
RESULT_TTL_SECONDS = 24 * 3600
# A claim outlives any request; if its process died, the key frees itself after this.
CLAIM_TTL_SECONDS = 120
_ACCEPTABLE_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
# Responses worth replaying: what succeeded, and declines (the attempt was recorded). Other
# 4xx answers wrote nothing, so running the request again is as good as replaying it.
_REPLAYABLE_STATUSES = frozenset({*range(200, 300), 402})


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, *, cache: redis.asyncio.Redis) -> None:
        self.app = app
        self._cache = cache

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = Headers(scope=scope).get(IDEMPOTENCY_HEADER)
        if key is None:
            await error_response(
                400, "idempotency_key_missing", f"POST requests need an {IDEMPOTENCY_HEADER} header"
            )(scope, receive, send)
            return
        if not _ACCEPTABLE_KEY.match(key):
            await error_response(
                400,
                "idempotency_key_invalid",
                f"{IDEMPOTENCY_HEADER} must be 1-255 printable ASCII characters without spaces",
            )(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            await error_response(
                413, "payload_too_large", f"Request bodies are limited to {MAX_BODY_BYTES} bytes"
            )(scope, receive, send)
            return
        # Keys belong to a tenant, as Stripe's belong to an account.
        tenant = scope["state"]["principal"].tenant_id
        storage_key = "billing:idempotency:" + _digest(tenant.encode(), key.encode())
        fingerprint = _digest(
            scope["method"].encode(), scope["path"].encode(), scope["query_string"], body
        )
        claim = json.dumps({"state": "in_progress", "fingerprint": fingerprint})
        try:
            if not await self._cache.set(storage_key, claim, nx=True, ex=CLAIM_TTL_SECONDS):
                await self._answer_from_record(scope, send, storage_key, fingerprint)
                return
        except redis.exceptions.RedisError:
            # Without the claim the request could run twice; refuse before running it at all.
            await error_response(
                503, "idempotency_unavailable", "Idempotency keys cannot be checked; retry later"
            )(scope, receive, send)
            return
        await self._run_and_record(scope, send, body, storage_key, fingerprint)

    async def _run_and_record(
        self, scope: Scope, send: Send, body: bytes, storage_key: str, fingerprint: str
    ) -> None:
        messages: list[Message] = []

        async def replay_body() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def hold(message: Message) -> None:
            messages.append(message)

        try:
            await self.app(scope, replay_body, hold)
        except BaseException:
            with contextlib.suppress(redis.exceptions.RedisError):
                await self._cache.delete(storage_key)
            raise
        # The record is stored before the client sees the answer, so a retry sent the moment
        # the answer arrives is replayed rather than told the key is still in use.
        start = next(message for message in messages if message["type"] == "http.response.start")
        try:
            if start["status"] in _REPLAYABLE_STATUSES:
                await self._cache.set(
                    storage_key, _record(fingerprint, start, messages), ex=RESULT_TTL_SECONDS
                )
            else:
                await self._cache.delete(storage_key)
        except redis.exceptions.RedisError:
            # The work is done and its answer goes out regardless; retries meet the claim
            # (409) until it expires, rather than running the request a second time sooner.
            logger.warning("idempotency record not stored", extra={"key": storage_key})
        for message in messages:
            await send(message)

    async def _answer_from_record(
        self, scope: Scope, send: Send, storage_key: str, fingerprint: str
    ) -> None:
        async def no_body() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        stored = await self._cache.get(storage_key)
        record = json.loads(stored) if stored is not None else None
        if record is None or record["state"] == "in_progress":
            if record is not None and record["fingerprint"] != fingerprint:
                response = _reused()
            else:
                response = error_response(
                    409,
                    "idempotency_request_in_progress",
                    "A request with this idempotency key is still running; retry shortly",
                )
            await response(scope, no_body, send)
            return
        if record["fingerprint"] != fingerprint:
            await _reused()(scope, no_body, send)
            return
        headers = [(b"content-length", str(len(base64.b64decode(record["body"]))).encode())]
        if record["content_type"]:
            headers.append((b"content-type", record["content_type"].encode()))
        headers.append((REPLAYED_HEADER.lower().encode(), b"true"))
        await send({"type": "http.response.start", "status": record["status"], "headers": headers})
        await send({"type": "http.response.body", "body": base64.b64decode(record["body"])})


def _record(fingerprint: str, start: Message, messages: list[Message]) -> str:
    body = b"".join(
        message.get("body", b"") for message in messages if message["type"] == "http.response.body"
    )
    return json.dumps(
        {
            "state": "done",
            "fingerprint": fingerprint,
            "status": start["status"],
            "content_type": Headers(raw=start.get("headers", [])).get("content-type"),
            "body": base64.b64encode(body).decode(),
        }
    )


def _reused() -> JSONResponse:
    return error_response(
        422,
        "idempotency_key_reused",
        "This idempotency key was used for a different request; use a new key",
    )


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if it exceeds MAX_BODY_BYTES."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        # Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()
