"""Worker status events for ``events.subscribe``: a fan-out to every subscriber's queue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from client.protocol.messages import EventNotification

SUBSCRIBER_QUEUE_MAX = 1024  # a subscriber that falls this far behind loses the oldest events


class EventBus:
    """Publishes :class:`EventNotification` to subscribers; publishing never blocks."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[EventNotification]] = set()

    def publish(self, worker: str, status: str, detail: str | None = None) -> None:
        event = EventNotification(worker=worker, status=status, time=time.time(), detail=detail)
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    async def stream(self) -> AsyncIterator[EventNotification]:
        """Every event published from now on, until the consumer stops iterating."""
        queue: asyncio.Queue[EventNotification] = asyncio.Queue(SUBSCRIBER_QUEUE_MAX)
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)
