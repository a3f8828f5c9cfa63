"""Per-principal rate limiting: a fixed window counter in Redis, shared by every API task."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis.asyncio
import redis.exceptions
from starlette.datastructures import MutableHeaders

from services.api.errors import error_response
from services.api.middleware.auth import is_protected

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateLimit:
    requests: int = 600
    window_seconds: int = 60


def window_key(principal: str, window_seconds: int, now: float) -> str:
    return f"billing:ratelimit:{principal}:{int(now // window_seconds)}"


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, cache: redis.asyncio.Redis, limit: RateLimit) -> None:
        self.app = app
        self._cache = cache
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get("state", {}).get("principal")
        if scope["type"] != "http" or not is_protected(scope["path"]) or principal is None:
            await self.app(scope, receive, send)
            return
        now = time.time()
        key = window_key(principal.key, self._limit.window_seconds, now)
        try:
            async with self._cache.pipeline(transaction=True) as pipeline:
                pipeline.incr(key)
                pipeline.expire(key, self._limit.window_seconds + 1)
                count, _ = await pipeline.execute()
        except redis.exceptions.RedisError:
            # Availability over strictness: a Redis outage must not take the API down with it.
            logger.warning("rate limiter unavailable; request let through")
            await self.app(scope, receive, send)
            return
        window_ends = (int(now // self._limit.window_seconds) + 1) * self._limit.window_seconds
        if count > self._limit.requests:
            response = error_response(
                429,
                "rate_limited",
                f"More than {self._limit.requests} requests in {self._limit.window_seconds} s",
                headers={"Retry-After": str(max(1, int(window_ends - now)))},
            )
            await response(scope, receive, send)
            return

        async def send_with_quota(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-RateLimit-Limit"] = str(self._limit.requests)
                headers["X-RateLimit-Remaining"] = str(max(0, self._limit.requests - count))
            await send(message)

        await self.app(scope, receive, send_with_quota)
