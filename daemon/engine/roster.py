"""Engine truth: which workers the engine lists as connected (SPEC §9 ``engine_registered``).

:class:`EngineRoster` asks ``engine::workers::list`` over the daemon's one
:class:`~daemon.engine.session.EngineSession` (never a connection of its own):

- in the background, every :data:`ROSTER_BUSY_INTERVAL_S` while ``busy()`` says workers are
  starting (or started and not registered yet), every :data:`ROSTER_STEADY_INTERVAL_S` otherwise,
  and at once when the session opens (:meth:`kick`);
- on demand, :meth:`fresh`: when the answer is older than :data:`ROSTER_MAX_AGE_S` a refresh is
  started and awaited for at most :data:`ROSTER_ON_DEMAND_WAIT_S`, so a slow engine never makes
  ``iii worker list`` slow (the cached answer is then used, with its age).

Refreshes are single-flight: concurrent askers share one call. A change in the set of managed
names the engine lists is published as ``registered`` / ``unregistered`` events. An error or
garbage answer makes the truth unknown (``None``); a timeout keeps the last answer (it only ages).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec

from daemon.engine.session import EngineCallFailed, EngineSession, EngineWorker
from daemon.events import EventBus

__all__ = [
    "ROSTER_BUSY_INTERVAL_S",
    "ROSTER_MAX_AGE_S",
    "ROSTER_ON_DEMAND_WAIT_S",
    "ROSTER_STEADY_INTERVAL_S",
    "EngineRoster",
]

log = logging.getLogger("iii.daemon.engine")

#: Background refresh period while workers are starting (SPEC §10: at most once a second).
ROSTER_BUSY_INTERVAL_S = 1.0
#: Background refresh period when nothing is expected to change.
ROSTER_STEADY_INTERVAL_S = 10.0
#: ``worker.list`` asks the engine again when its answer is older than this (SPEC §10).
ROSTER_MAX_AGE_S = 0.25
#: How long ``worker.list`` waits for that answer before showing the cached one.
ROSTER_ON_DEMAND_WAIT_S = 0.15
#: Budget of one ``engine::workers::list`` call (the background keeps waiting this long).
ROSTER_CALL_TIMEOUT_S = 2.0


class _ListResult(msgspec.Struct):
    workers: list[EngineWorker]


class EngineRoster:
    """The engine's worker list as last seen. ``names`` is None while it cannot be asked."""

    def __init__(self, session: EngineSession, events: EventBus, *,
                 managed: Callable[[str], bool], busy: Callable[[], bool],
                 on_update: Callable[[set[str] | None], None] | None = None) -> None:
        self.session, self.events = session, events
        self.managed, self.busy, self.on_update = managed, busy, on_update
        self.names: set[str] | None = None
        self.fetched_at: float | None = None  # monotonic time of the last answer
        self.refreshes = 0  #: answers received (for tests and the bench)
        self._kick = asyncio.Event()
        self._inflight: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._warned = False

    def age(self) -> float | None:
        """Seconds since the last answer, or None (never asked, or the truth is unknown)."""
        if self.names is None or self.fetched_at is None:
            return None
        return time.monotonic() - self.fetched_at

    def kick(self) -> None:
        """Refresh now (the session just opened)."""
        self._kick.set()

    def forget(self) -> None:
        """The session closed: the engine cannot be asked, the truth is unknown."""
        self._set(None)

    def _set(self, names: set[str] | None) -> None:
        old = self.names
        self.names = names
        if self.on_update is not None:
            self.on_update(names)
        if old is None or names is None:
            return  # from or to "unknown": no registration changed that we saw
        for name in sorted(names - old):
            if self.managed(name):
                self.events.publish(name, "registered")
        for name in sorted(old - names):
            if self.managed(name):
                self.events.publish(name, "unregistered")

    async def _refresh(self) -> None:
        try:
            result = await self.session.call("engine::workers::list", {},
                                             timeout=ROSTER_CALL_TIMEOUT_S)
            workers = msgspec.convert(result, _ListResult).workers
        except EngineCallFailed as exc:
            if exc.code == "timeout":
                self._warn(f"engine::workers::list: {exc.message}; showing the last answer")
            else:
                self._warn(f"engine::workers::list failed: {exc}")
                self._set(None)
            return
        except msgspec.ValidationError as exc:
            self._warn(f"engine::workers::list answered something unexpected: {exc}")
            self._set(None)
            return
        if self._warned:
            log.info("engine::workers::list answers again")
            self._warned = False
        self.fetched_at = time.monotonic()
        self.refreshes += 1
        self._set({w.name for w in workers})

    def _warn(self, message: str) -> None:
        """Once per run of failures (a broken engine is asked every second: no log flood)."""
        if not self._warned:
            log.warning("%s", message)
            self._warned = True
        else:
            log.debug("%s", message)

    def _start_refresh(self) -> asyncio.Task[None] | None:
        if self._tg is None or not self.session.reachable:
            return None
        if self._inflight is None or self._inflight.done():
            self._inflight = self._tg.create_task(self._refresh(), name="engine-roster")
        return self._inflight

    async def fresh(self, max_age: float = ROSTER_MAX_AGE_S,
                    wait: float = ROSTER_ON_DEMAND_WAIT_S) -> float | None:
        """Make the truth at most ``max_age`` old if the engine answers within ``wait``; return
        its age (None when unknown)."""
        age = self.age()
        if age is None or age > max_age:
            task = self._start_refresh()
            if task is not None:
                await asyncio.wait({task}, timeout=wait)
        return self.age()

    async def run(self) -> None:
        """The background refresh; cancel to stop."""
        async with asyncio.TaskGroup() as self._tg:
            last = time.monotonic()
            while True:
                # Wake at the busy pace and decide then: a worker that starts during a steady
                # wait must not wait for the steady period to end.
                try:
                    await asyncio.wait_for(self._kick.wait(), ROSTER_BUSY_INTERVAL_S)
                except TimeoutError:
                    pass
                due = self._kick.is_set() or self.busy() or \
                    time.monotonic() - last >= ROSTER_STEADY_INTERVAL_S
                self._kick.clear()
                if not due:
                    continue
                last = time.monotonic()
                task = self._start_refresh()
                if task is not None:
                    await asyncio.wait({task})
