"""Calls shared by the requests that arrive while one is on its way: one round trip per batch.

The rate limit's counts (services/api/ratelimit.py) and the idempotency answers' lookups
(services/api/idempotency.py) both go to Redis once per request. Under load a process has tens
of requests in flight, and each round trip's wake-ups cost more than the command, so requests
that arrive while a group's call is on its way wait, and go together in the group's next call.
A lone request is one call, as it would be without this.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batches(Generic[Item, Result]):
    """Items submitted under one group go out together: `send(group, items)` answers one result
    per item, in order.

    The call's exception reaches every item of its batch, as if each had made the call. Items
    still waiting when the group's task is cancelled (the server stopping) get `unanswered`. A
    request that stops waiting (its client went away) leaves its item in the batch: it was sent.
    """

    def __init__(
        self,
        send: Callable[[Hashable, list[Item]], Awaitable[list[Result]]],
        *,
        unanswered: Result,
    ) -> None:
        self._send = send
        self._unanswered = unanswered
        # Items waiting for their group's next call, and each busy group's task making calls.
        self._waiting: dict[Hashable, list[tuple[Item, asyncio.Future[Result]]]] = {}
        self._senders: dict[Hashable, asyncio.Task[None]] = {}

    async def submit(self, group: Hashable, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Result] = loop.create_future()
        self._waiting.setdefault(group, []).append((item, waiter))
        if group not in self._senders:
            self._senders[group] = loop.create_task(self._drain(group))
        return await waiter

    async def _drain(self, group: Hashable) -> None:
        """Send the group's waiting items, batch after batch, until none wait."""
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while batch := self._waiting.pop(group, []):
                results = await self._send(group, [item for item, _ in batch])
                for (_, waiter), result in zip(batch, results, strict=True):
                    if not waiter.done():
                        waiter.set_result(result)
        except Exception as error:  # noqa: BLE001 - each item fails with it, as if it had called
            for _, waiter in [*batch, *self._waiting.pop(group, [])]:
                if not waiter.done():
                    waiter.set_exception(error)
        finally:
            # No await since the last pop: nothing joined the group unseen.
            for _, waiter in [*batch, *self._waiting.pop(group, [])]:
                if not waiter.done():
                    waiter.set_result(self._unanswered)
            del self._senders[group]
