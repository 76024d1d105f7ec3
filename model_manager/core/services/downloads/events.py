"""Live download states for Server-Sent Events subscribers.

Each subscriber keeps only the latest state of each download it has not sent yet, so a slow (or stuck)
client never slows the others or the downloads, and its memory is bounded by the number of downloads.
Every state published gets the next number of one sequence, which streams send as the SSE `id:`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from model_manager.core.models import DownloadStatus


@dataclass(frozen=True)
class StatusEvent:
    """One state of one download, numbered in publication order."""

    event_id: int
    status: DownloadStatus


class Subscription:
    """The states a subscriber has yet to receive, oldest change first. Iterate it with `async for`."""

    def __init__(self, broadcaster: StatusBroadcaster, download_id: str | None) -> None:
        self.download_id = download_id
        self._broadcaster = broadcaster
        self._pending: dict[str, StatusEvent] = {}
        self._changed = asyncio.Event()
        self._closed = False

    def offer(self, event: StatusEvent) -> None:
        """Keep `event` as this subscriber's latest state of its download, replacing an unsent older one."""
        if self._closed or (self.download_id is not None and event.status.download_id != self.download_id):
            return
        self._pending.pop(event.status.download_id, None)  # re-inserted last: the newest change goes last
        self._pending[event.status.download_id] = event
        self._changed.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> StatusEvent:
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            self._changed.clear()
            await self._changed.wait()
        download_id = next(iter(self._pending))
        return self._pending.pop(download_id)

    def close(self) -> None:
        """Stop receiving states; a waiting iteration ends."""
        self._closed = True
        self._pending.clear()
        self._changed.set()
        self._broadcaster.remove(self)


class StatusBroadcaster:
    """Fans every published download state out to the current subscribers. Use from the event loop only."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._last_event_id = 0

    def publish(self, status: DownloadStatus) -> StatusEvent:
        """Number `status` and hand it to every subscriber. Never blocks."""
        event = self._next_event(status)
        for subscription in list(self._subscriptions):
            subscription.offer(event)
        return event

    def subscribe(self, snapshot: Iterable[DownloadStatus], download_id: str | None = None) -> Subscription:
        """A new subscription that first delivers `snapshot`, then every state published from now on."""
        subscription = Subscription(self, download_id)
        for status in snapshot:
            subscription.offer(self._next_event(status))
        self._subscriptions.add(subscription)
        return subscription

    def remove(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def _next_event(self, status: DownloadStatus) -> StatusEvent:
        self._last_event_id += 1
        return StatusEvent(self._last_event_id, status)
