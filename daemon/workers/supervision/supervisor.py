"""Supervision of every worker (SPEC §9): one :class:`Reconciler` per worker, by name.

The supervisor only finds or makes a worker's reconciler and forwards intent to it; what runs
when (launch, stop, crash → backoff → restart) is decided by the reconciler alone
(``daemon/workers/supervision/reconciler.py``). Launching itself (image, sandbox, scripts) is the
``launch`` function it is handed (``WorkerLauncher.launch``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from daemon.background import BackgroundTasks
from daemon.events import EventBus
from daemon.sandboxes import SandboxLayout, SandboxTask
from daemon.workers.supervision.desired import IDLE, Desired, Why, load_desired, save_desired
from daemon.workers.supervision.reconciler import Reconciler
from daemon.workers.supervision.runtime import BootSink, Launch, WorkerRuntime
from daemon.workers.supervision.state import DEFAULT_BACKOFF, Backoff, WorkerState

__all__ = ["Supervisor"]


class Supervisor:
    """Owns every worker's :class:`Reconciler`; their tasks run in the daemon's tasks."""

    def __init__(self, launch: Launch, events: EventBus, tasks: BackgroundTasks, *,
                 home: Path, stop_timeout_s: float = 10.0, backoff: Backoff = DEFAULT_BACKOFF) -> None:
        self._launch, self._events, self._tasks = launch, events, tasks
        self._home, self.stop_timeout_s, self._backoff = home, stop_timeout_s, backoff
        self._recs: dict[str, Reconciler] = {}

    def _dir(self, name: str) -> Path:
        return SandboxLayout(self._home, name).dir

    def reconciler(self, name: str, desired: Desired | None = None) -> Reconciler:
        """The worker's reconciler, made (with its persisted desired state) on first use."""
        rec = self._recs.get(name)
        if rec is None:
            if desired is None:
                desired = load_desired(self._dir(name)) or IDLE
            directory = self._dir(name)
            rec = self._recs[name] = Reconciler(
                name, self._launch, self._events, lambda d: save_desired(directory, d),
                desired=desired, stop_timeout_s=self.stop_timeout_s, backoff=self._backoff)
            rec.run_in(self._tasks.create_task)
        return rec

    def find(self, name: str) -> Reconciler | None:
        return self._recs.get(name)

    def runtime(self, name: str) -> WorkerRuntime:
        """What is known of ``name`` (a blank stopped runtime for a worker never touched)."""
        rec = self._recs.get(name)
        return rec.rt if rec is not None else WorkerRuntime(name)

    def runtimes(self) -> list[WorkerRuntime]:
        return [rec.rt for rec in self._recs.values()]

    def manually_stopped(self, name: str) -> bool:
        """Whether the user stopped ``name`` (an automatic start leaves it alone)."""
        return self.runtime(name).desired.manual_stop

    # -- intent ----------------------------------------------------------------------------------

    async def start(self, name: str, why: Why = Why.USER, sink: BootSink | None = None
                    ) -> tuple[WorkerRuntime, list[str]]:
        rec = self.reconciler(name)
        warnings = await rec.start(why, sink)
        return rec.rt, warnings

    async def restart(self, name: str, sink: BootSink | None = None
                      ) -> tuple[WorkerRuntime, list[str]]:
        rec = self.reconciler(name)
        warnings = await rec.restart(sink)
        return rec.rt, warnings

    async def stop(self, name: str, timeout: float | None = None, why: Why = Why.USER
                   ) -> WorkerRuntime:
        rec = self.reconciler(name)
        await rec.stop(why, timeout)
        return rec.rt

    def auto_start(self, name: str, why: Why = Why.ENGINE) -> None:
        self.reconciler(name).auto_start(why)

    def grace_stop(self) -> list[str]:
        """The engine stayed down past the grace: every worker the daemon started is stopped."""
        return [rec.name for rec in list(self._recs.values()) if rec.grace_stop()]

    # -- daemon start / removal / shutdown ---------------------------------------------------------

    def adopt(self, name: str, task: SandboxTask, isolation: str | None,
              desired: Desired) -> WorkerRuntime:
        """Take over a sandbox found running at daemon start (reattach)."""
        if name in self._recs:
            return self._recs[name].rt
        rec = Reconciler(name, self._launch, self._events,
                         lambda d: save_desired(self._dir(name), d), desired=desired,
                         stop_timeout_s=self.stop_timeout_s, backoff=self._backoff)
        rec.rt.task, rec.rt.isolation = task, isolation
        rec.rt.state = WorkerState.RUNNING
        rec.rt.started_at = time.time()
        self._events.publish(name, WorkerState.RUNNING.value, f"pid {task.pid}")
        self._recs[name] = rec
        rec.run_in(self._tasks.create_task)
        return rec.rt

    async def remove(self, name: str) -> None:
        """Stop the worker (whatever is in flight is cancelled) and forget its reconciler."""
        rec = self._recs.get(name)
        if rec is not None:
            await rec.close(stop=True)
            self._recs.pop(name, None)

    async def close_all(self, *, stop_workers: bool) -> None:
        """Shutdown: stop every worker (or leave them running) without changing what is
        desired of them, so the next daemon picks up where this one left."""
        recs = list(self._recs.values())
        await asyncio.gather(*(rec.close(stop=stop_workers) for rec in recs),
                             return_exceptions=True)
        self._recs.clear()
