"""The idempotency answer cache's batches: one Redis call for concurrent lookups, each answered
with its own key's answer, and misses (never errors) when Redis cannot answer. Real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from services import devservers
from services.api.idempotency import AnswerCache, StoredResponse
from services.billing.cache import CircuitBreaker, async_client
from services.tests.conftest import run_async

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import redis

    from services.billing.config import Settings


def _calls(cache: redis.Redis, command: str) -> int:
    stats: dict[str, Any] = cache.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def _with_answers(
    settings: Settings, work: Callable[[AnswerCache], Awaitable[Any]], **cache: Any
) -> Any:
    async def run() -> Any:
        client = async_client(dataclasses.replace(settings.cache, **cache))
        try:
            return await work(AnswerCache(client, CircuitBreaker()))
        finally:
            await client.aclose()

    return run_async(run())


def _answer(number: int) -> StoredResponse:
    body = f'{{"number": {number}}}'.encode()
    return StoredResponse(
        fingerprint=f"f{number}", status=201, content_type="application/json", body=body
    )


def test_concurrent_lookups_share_a_call_and_each_gets_its_own_answer(
    settings: Settings, cache: redis.Redis
) -> None:
    cache.flushdb()

    async def work(answers: AnswerCache) -> list[StoredResponse | None]:
        for number in range(0, 40, 2):  # every other key holds an answer
            await answers.put(f"key-{number}", _answer(number))
        return await asyncio.gather(*(answers.get(f"key-{number}") for number in range(40)))

    before = _calls(cache, "mget"), _calls(cache, "get")
    found = _with_answers(settings, work)
    # The first lookup goes alone; the 39 that arrived meanwhile go together.
    assert _calls(cache, "mget") - before[0] <= 2
    assert _calls(cache, "get") == before[1]
    for number, answer in enumerate(found):
        if number % 2:
            assert answer is None
        else:
            assert answer is not None
            assert (answer.fingerprint, answer.body) == (f"f{number}", _answer(number).body)


def test_lookups_one_after_another_are_answered_each(
    settings: Settings, cache: redis.Redis
) -> None:
    cache.flushdb()

    async def work(answers: AnswerCache) -> list[StoredResponse | None]:
        await answers.put("alone", _answer(1))
        found = [await answers.get("alone"), await answers.get("missing")]
        assert answers._lookups._senders == {}  # no task left behind between requests
        return found

    first, missing = _with_answers(settings, work)
    assert first is not None
    assert first.fingerprint == "f1"
    assert missing is None


def test_without_redis_every_lookup_is_a_miss(settings: Settings) -> None:
    nobody = devservers.free_port()  # Nothing listens there: every connection is refused.

    async def work(answers: AnswerCache) -> list[StoredResponse | None]:
        return await asyncio.gather(*(answers.get(f"key-{n}") for n in range(10)))

    assert _with_answers(settings, work, port=nobody) == [None] * 10
