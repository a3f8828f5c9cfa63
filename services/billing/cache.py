"""Redis clients for the configured cache (ElastiCache / Memorystore, or a local server).

Redis is an accelerator here, never the record: rate limits fail open and idempotency records
live in PostgreSQL. So its calls get a short budget, and a circuit breaker stops paying even
that once Redis has failed a few times in a row: while it is open, calls fail at once.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, TypeVar

import redis
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from services.billing.config import CacheSettings

# Connect and per-command budget. A local round trip takes well under a millisecond; with an
# unreachable Redis, redis-py's defaults (no timeout) or the earlier 5 s added that to every
# request.
TIMEOUT_SECONDS = 0.1
SIMULATOR_TIMEOUT_SECONDS = 5.0
# Idle pooled connections are checked this often, so a failover does not surface as an error.
HEALTH_CHECK_SECONDS = 30
# The breaker opens after this many consecutive failures and stays open this long; then one
# call is let through to probe, and its outcome closes or reopens the breaker.
FAILURES_TO_OPEN = 3
OPEN_SECONDS = 5.0

Result = TypeVar("Result")


class CircuitOpenError(redis.exceptions.ConnectionError):
    """Redis failed recently; the call was not attempted. A RedisError, so callers' handling of
    an unreachable Redis covers it."""


class CircuitBreaker:
    """Counts consecutive failures of calls to one dependency and short-circuits while open."""

    def __init__(
        self,
        *,
        failures_to_open: int = FAILURES_TO_OPEN,
        open_seconds: float = OPEN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._failures_to_open = failures_to_open
        self._open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._failures >= self._failures_to_open and self._clock() < self._open_until

    def before_call(self) -> None:
        with self._lock:
            if self._failures < self._failures_to_open:
                return
            now = self._clock()
            if now < self._open_until:
                raise CircuitOpenError("Redis failed repeatedly; skipped while the breaker is open")
            # Half-open: this call probes; others keep failing fast until it reports back.
            self._open_until = now + self._open_seconds

    def succeeded(self) -> None:
        with self._lock:
            self._failures = 0

    def failed(self) -> None:
        with self._lock:
            self._failures += 1
            if self._failures >= self._failures_to_open:
                self._open_until = self._clock() + self._open_seconds

    async def call(self, operation: Callable[[], Awaitable[Result]]) -> Result:
        """Run one Redis operation under the breaker; RedisError when it fails or is skipped."""
        self.before_call()
        try:
            result = await operation()
        except redis.exceptions.RedisError:
            self.failed()
            raise
        self.succeeded()
        return result


def blocking_client(cache: CacheSettings) -> redis.Redis:
    """The payment simulator's client: its ledger in Redis stands in for a payment gateway,
    so it gets a gateway's budget rather than a cache's."""
    return redis.Redis(
        host=cache.host,
        port=cache.port,
        password=cache.auth_token or None,
        ssl=cache.tls,
        ssl_ca_certs=cache.ca_file,
        socket_timeout=SIMULATOR_TIMEOUT_SECONDS,
        socket_connect_timeout=SIMULATOR_TIMEOUT_SECONDS,
        health_check_interval=HEALTH_CHECK_SECONDS,
        # redis-py 6+ retries a failed command 3 times with backoff by default
        # (redis.Redis.__init__'s retry argument); one try keeps the budget the budget.
        retry=Retry(NoBackoff(), 0),
    )


def async_client(cache: CacheSettings) -> redis.asyncio.Redis:
    return redis.asyncio.Redis(
        host=cache.host,
        port=cache.port,
        password=cache.auth_token or None,
        ssl=cache.tls,
        ssl_ca_certs=cache.ca_file,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
        health_check_interval=HEALTH_CHECK_SECONDS,
        retry=AsyncRetry(NoBackoff(), 0),
    )
