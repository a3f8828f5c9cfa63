"""Per-principal rate limiting: a fixed window counter in Redis, shared by every API task.

It runs after routing and authentication (a route dependency), so an unknown path or method
never counts. It fails open: Redis is not worth an outage of the API, and its circuit breaker
keeps a dead Redis from costing each request its timeout.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis.asyncio
import redis.exceptions

from services.api.batches import Batches
from services.billing.errors import BillingError

if TYPE_CHECKING:
    from collections.abc import Hashable

    from services.billing.cache import CircuitBreaker

logger = logging.getLogger(__name__)

LIMIT_HEADER = "X-RateLimit-Limit"
REMAINING_HEADER = "X-RateLimit-Remaining"
RETRY_AFTER_HEADER = "Retry-After"


@dataclass(frozen=True)
class RateLimit:
    # Per environment: BILLING_RATE_LIMIT_PER_MINUTE (services.billing.config).
    requests: int
    window_seconds: int = 60


@dataclass(frozen=True)
class Quota:
    """What the caller has left in this window; sent as X-RateLimit-* headers."""

    limit: int
    remaining: int

    def headers(self) -> dict[str, str]:
        return {LIMIT_HEADER: str(self.limit), REMAINING_HEADER: str(self.remaining)}


class RateLimitedError(BillingError):
    def __init__(self, limit: RateLimit, retry_after: int) -> None:
        super().__init__(
            "rate_limited",
            f"More than {limit.requests} requests in {limit.window_seconds} s",
            status=429,
        )
        self.headers = {RETRY_AFTER_HEADER: str(retry_after)}


# One round trip, one reply: count a batch of requests and start the window's expiry with its
# first. A script runs atomically (https://redis.io/docs/latest/develop/programmability/eval-intro/),
# so a batch of n takes the counts total-n+1 .. total, as n INCRs in a row would.
_COUNT = """
local counted = redis.call('INCRBY', KEYS[1], ARGV[1])
if counted == tonumber(ARGV[1]) then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return counted
"""


def window_key(principal: str, window_seconds: int, now: float) -> str:
    return f"billing:ratelimit:{principal}:{int(now // window_seconds)}"


class RateLimiter:
    """Counts requests in Redis, one round trip per batch of a principal's concurrent requests.

    Requests of one window key that arrive while its count is on its way to Redis wait and go
    together in the next call (INCRBY n); each gets its own count in the order it arrived, so
    the limit holds exactly as with one INCR each. A lone request is one call, as before; a
    busy principal's 64 concurrent requests cost a few calls instead of 64.
    """

    def __init__(
        self, cache: redis.asyncio.Redis, breaker: CircuitBreaker, limit: RateLimit
    ) -> None:
        self._cache = cache
        self._breaker = breaker
        self.limit = limit
        # EVALSHA; when the server does not know the script (a restart or a failover empties its
        # script cache), redis-py's Script loads it and runs it again
        # (https://redis.io/docs/latest/develop/reference/errors/common/noscript/).
        self._count = cache.register_script(_COUNT)
        # Requests of one window key, counted together (services/api/batches.py). Cancelled
        # (the server stopping): the requests waiting are let through uncounted.
        self._counts: Batches[None, int | None] = Batches(self._count_batch, unanswered=None)

    async def take(self, principal: str) -> Quota | None:
        """Count one request; RateLimitedError past the limit, None when Redis cannot count."""
        now = time.time()
        key = window_key(principal, self.limit.window_seconds, now)
        counted = await self._counts.submit(key, None)
        if counted is None:
            logger.warning("rate limiter unavailable; request let through")
            return None
        if counted > self.limit.requests:
            window_ends = (int(now // self.limit.window_seconds) + 1) * self.limit.window_seconds
            raise RateLimitedError(self.limit, max(1, int(window_ends - now)))
        return Quota(self.limit.requests, max(0, self.limit.requests - counted))

    async def _count_batch(self, key: Hashable, requests: list[None]) -> list[int | None]:
        """Each request's count, in order; None for each when Redis cannot count."""
        total = await self._call(str(key), len(requests))
        if total is None:
            return [None] * len(requests)
        first = total - len(requests) + 1
        return [first + position for position in range(len(requests))]

    async def _call(self, key: str, requests: int) -> int | None:
        async def count() -> int:
            ttl = self.limit.window_seconds + 1
            return int(await self._count(keys=[key], args=[requests, ttl]))

        try:
            return await self._breaker.call(count)
        except redis.exceptions.RedisError:
            return None
