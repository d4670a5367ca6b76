"""The daemon's background tasks: one owner, and a failure in one never takes the daemon down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

log = logging.getLogger("iii.daemon.background")
T = TypeVar("T")


class BackgroundTasks:
    """A TaskGroup whose tasks log their exceptions instead of cancelling the group's owner."""

    def __init__(self) -> None:
        self._group = asyncio.TaskGroup()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Self:
        await self._group.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel_all()
        await self._group.__aexit__(None, None, None)

    def create_task(self, coro: Coroutine[Any, Any, T], *, name: str | None = None
                    ) -> asyncio.Task[T | None]:
        task = self._group.create_task(self._guard(coro, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _guard(coro: Coroutine[Any, Any, T], name: str | None) -> T | None:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s failed", name or coro)
            return None

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
