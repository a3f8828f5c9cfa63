"""The rate limiter's batches: one Redis call for a principal's concurrent requests, each request
still counted once and in order, so the limit holds exactly; and no request left waiting when
Redis fails, a request gives up, or the count fails unexpectedly. Real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

import pytest

from services.api.ratelimit import RateLimit, RateLimitedError, RateLimiter
from services.billing.cache import CircuitBreaker, async_client

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import redis

    from services.api.ratelimit import Quota
    from services.billing.config import Settings

LIMIT = RateLimit(requests=30)


def _evalsha_calls(cache: redis.Redis) -> int:
    stats: dict[str, Any] = cache.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def _with_limiter(
    settings: Settings, work: Callable[[RateLimiter], Awaitable[Any]], **cache: Any
) -> Any:
    async def run() -> Any:
        client = async_client(dataclasses.replace(settings.cache, **cache))
        try:
            return await work(RateLimiter(client, CircuitBreaker(), LIMIT))
        finally:
            await client.aclose()

    return asyncio.run(run())


async def _outcomes(limiter: RateLimiter, principal: str, n: int) -> list[Quota | str | None]:
    async def one() -> Quota | str | None:
        try:
            return await limiter.take(principal)
        except RateLimitedError as refused:
            return refused.code

    return await asyncio.gather(*(one() for _ in range(n)))


def test_concurrent_requests_share_a_call_and_the_limit_holds_exactly(
    settings: Settings, cache: redis.Redis
) -> None:
    for _ in range(2):  # Once more if a window turned over during the requests.
        cache.flushdb()
        calls = _evalsha_calls(cache)
        outcomes = _with_limiter(settings, lambda limiter: _outcomes(limiter, "t/burst", 50))
        keys = cache.keys("billing:ratelimit:t/burst:*")
        if len(keys) == 1:
            break
    # 50 requests, one INCRBY 50 (a second call at most, had the first gone out alone).
    assert _evalsha_calls(cache) - calls <= 2
    assert int(cache.get(keys[0]) or 0) == 50
    assert 0 < int(cache.ttl(keys[0])) <= LIMIT.window_seconds + 1
    # Each request its own count, in the order they came: the first 30 pass, the rest do not.
    remaining = [o.remaining for o in outcomes[:30] if not isinstance(o, (str, type(None)))]
    assert remaining == list(range(29, -1, -1))
    assert outcomes[30:] == ["rate_limited"] * 20


def test_requests_one_after_another_count_one_each(settings: Settings, cache: redis.Redis) -> None:
    async def three(limiter: RateLimiter) -> list[int]:
        quotas = [await limiter.take("t/steady") for _ in range(3)]
        return [q.remaining for q in quotas if q is not None]

    for _ in range(2):  # Once more if a window turned over during the requests.
        cache.flushdb()
        counted = _with_limiter(settings, three)
        if len(cache.keys("billing:ratelimit:t/steady:*")) == 1:
            break
    assert counted == [29, 28, 27]


def test_a_request_that_gives_up_is_counted_and_the_others_answered(
    settings: Settings, cache: redis.Redis
) -> None:
    cache.flushdb()

    async def cancel_one(limiter: RateLimiter) -> list[Any]:
        tasks = [asyncio.create_task(limiter.take("t/gone")) for _ in range(10)]
        await asyncio.sleep(0)  # every request is waiting for the batch's call
        tasks[3].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = _with_limiter(settings, cancel_one)
    assert isinstance(results[3], asyncio.CancelledError)
    answered = [r.remaining for i, r in enumerate(results) if i != 3]
    assert sorted(answered, reverse=True) == [29, 28, 27, 25, 24, 23, 22, 21, 20]
    # Ten counted, the one that gave up too (unless a window turned over in between).
    counts = [int(cache.get(key) or 0) for key in cache.keys("billing:ratelimit:t/gone:*")]
    assert sum(counts) == 10


def test_without_redis_every_request_is_let_through(settings: Settings) -> None:
    async def unreachable(limiter: RateLimiter) -> list[Any]:
        return await _outcomes(limiter, "t/down", 5)

    # Nothing listens on port 1 of the loopback.
    assert _with_limiter(settings, unreachable, port=1) == [None] * 5


def test_an_unexpected_failure_reaches_every_request_of_the_batch(settings: Settings) -> None:
    class CountingBrokeError(Exception):
        pass

    async def broken(limiter: RateLimiter) -> list[Any]:
        async def fail(**_: Any) -> int:
            raise CountingBrokeError

        limiter._count = fail  # type: ignore[assignment]
        tasks = [limiter.take("t/broken") for _ in range(4)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = _with_limiter(settings, broken)
    assert [type(r) for r in results] == [CountingBrokeError] * 4


@pytest.mark.parametrize("requests", [1, 7])
def test_no_sender_is_left_behind(settings: Settings, cache: redis.Redis, requests: int) -> None:
    cache.flushdb()

    async def run(limiter: RateLimiter) -> tuple[int, int]:
        await _outcomes(limiter, "t/tidy", requests)
        counts = limiter._counts
        return len(counts._senders), len(counts._waiting)

    assert _with_limiter(settings, run) == (0, 0)
