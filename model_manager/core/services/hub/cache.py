"""A small time-to-live cache of Hub answers, so a UI browsing back and forth does not hammer the Hub."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class TTLCache:
    """Keeps successful answers for `ttl_seconds`, at most `max_entries` of them (least recently used go first).

    Concurrent calls for the same key share one fetch. Failures are never stored, so the next call asks again.
    A `ttl_seconds` of 0 turns caching off (concurrent identical calls still share their fetch).
    """

    def __init__(
        self, ttl_seconds: float, max_entries: int = 256, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._in_flight: dict[Hashable, asyncio.Task[Any]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    async def get_or_fetch(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        """The cached answer for `key`, or the result of `fetch()` (stored when it succeeds). Raises what `fetch` raises."""
        entry = self._entries.get(key)
        if entry is not None:
            expires_at, value = entry
            if self._clock() < expires_at:
                self._entries.move_to_end(key)
                return value
            del self._entries[key]
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.ensure_future(fetch())
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._settle(key, done))
        # shield: one impatient caller going away must not cancel the fetch the others wait for.
        return await asyncio.shield(task)

    def _settle(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._in_flight.get(key) is task:
            del self._in_flight[key]
        if task.cancelled() or task.exception() is not None or self.ttl_seconds <= 0:
            return
        self._entries[key] = (self._clock() + self.ttl_seconds, task.result())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
