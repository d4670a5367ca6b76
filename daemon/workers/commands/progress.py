"""Relaying progress from synchronous callbacks (image pulls, the boot sequence, an export) to
the client of a ``worker.*`` or ``image.pull`` call, as ``progress`` notifications.

It lives with the workers because a boot step's client phase comes from the worker state table
(``daemon.workers.supervision.state.BOOT_PHASES``); the API's ``image.pull`` uses it from above."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from client.protocol.messages import ProgressNotification, ProgressPhase
from daemon.images.models import PullProgress
from daemon.notify import ClientGone, Notify
from daemon.sandboxes.boot import BootPhase
from daemon.workers.supervision.state import BOOT_PHASES


class ProgressRelay:
    """Sync callbacks in, ``progress`` notifications out, in order, from any thread."""

    def __init__(self, notify: Notify | None, request: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._notify, self._request, self._loop = notify, request, loop
        self._queue: asyncio.Queue[ProgressNotification | None] = asyncio.Queue()
        self.messages: list[str] = []

    def _put(self, note: ProgressNotification) -> None:
        self.messages.append(note.message)
        if self._notify is not None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, note)

    def boot(self, phase: BootPhase, message: str) -> None:
        self._put(ProgressNotification(id=self._request, phase=BOOT_PHASES[phase][1],
                                       message=message))

    def pull(self, p: PullProgress) -> None:
        if p.phase == "pull":
            message = f"pulling: {p.layers_done}/{p.layers_total} layers"
            current, total, unit = p.bytes_done, p.bytes_total, "bytes"
        else:
            message = f"extracting: {p.layers_done}/{p.layers_total} layers"
            current, total, unit = p.layers_done, p.layers_total, "layers"
        self._put(ProgressNotification(id=self._request, phase=p.phase, message=message,
                                       current=current, total=total, unit=unit))

    def export(self, phase: str, message: str, done: int, total: int) -> None:
        """Building the exported layer (``layer``) or pushing it (``push``), in bytes."""
        mapped: ProgressPhase = "push" if phase == "push" else "layer"
        self._put(ProgressNotification(id=self._request, phase=mapped, message=message,
                                       current=done, total=total, unit="bytes"))

    def note(self, phase: ProgressPhase, message: str) -> None:
        self._put(ProgressNotification(id=self._request, phase=phase, message=message))

    async def _pump(self) -> None:
        assert self._notify is not None
        while (note := await self._queue.get()) is not None:
            with contextlib.suppress(ClientGone):
                await self._notify("progress", note)


@contextlib.asynccontextmanager
async def progress_relay(notify: Notify, request: str, enabled: bool
                         ) -> AsyncIterator[ProgressRelay]:
    """A relay whose notifications all reach the client before the block's result does."""
    relay = ProgressRelay(notify if enabled else None, request, asyncio.get_running_loop())
    if not enabled:
        yield relay
        return
    # The relay owns its pump; a TaskGroup would wrap the body's errors in an ExceptionGroup.
    pump = asyncio.create_task(relay._pump())
    try:
        yield relay
    finally:
        relay._loop.call_soon(relay._queue.put_nowait, None)  # after the queued notes
        await pump
