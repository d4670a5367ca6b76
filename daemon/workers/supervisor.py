"""Supervision of running workers (SPEC §9): start, stop, crash detection, restart with backoff.

One :class:`WorkerRuntime` per worker holds what the daemon knows about its process. Launching
(image, sandbox, scripts) is not done here: :class:`Supervisor` is handed a ``launch`` function
and only decides *when* to call it and what the outcome means.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from daemon.background import BackgroundTasks
from daemon.errors import Conflict
from daemon.events import EventBus
from daemon.sandboxes import BootPhase, SandboxTask
from daemon.workers.state import (
    BOOT_PHASES,
    HEALTHY_RESET_S,
    TRANSITIONS,
    WorkerState,
    backoff_delay,
    check_transition,
)

log = logging.getLogger("iii.daemon.supervisor")

Progress = Callable[[BootPhase, str], None]  # (phase, message)


@dataclass
class Launched:
    """What ``launch`` hands back: the running sandbox and facts worth showing."""

    task: SandboxTask
    isolation: str | None  # None: a Binary worker, a host process
    warnings: list[str] = field(default_factory=list)


Launch = Callable[[str, Progress | None], Awaitable[Launched]]


@dataclass
class WorkerRuntime:
    """The daemon's in-memory view of one worker's process."""

    name: str
    state: WorkerState = WorkerState.STOPPED
    task: SandboxTask | None = None
    isolation: str | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    last_error: str | None = None  # the launcher's reason, e.g. "killed: out of memory (...)"
    started_at: float | None = None
    auto_started: bool = False
    manual_stop: bool = False
    failures: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    monitor: asyncio.Task[None] | None = None
    backoff: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.task.pid if self.task is not None and self.state is WorkerState.RUNNING \
            else None


class Supervisor:
    """Owns every :class:`WorkerRuntime`; its monitors and restarts run in the daemon's tasks."""

    def __init__(self, launch: Launch, events: EventBus, tasks: BackgroundTasks) -> None:
        self._launch = launch
        self._events = events
        self._tasks = tasks
        self._runtimes: dict[str, WorkerRuntime] = {}

    def runtime(self, name: str) -> WorkerRuntime:
        rt = self._runtimes.get(name)
        if rt is None:
            rt = self._runtimes[name] = WorkerRuntime(name)
        return rt

    def runtimes(self) -> list[WorkerRuntime]:
        return list(self._runtimes.values())

    def _set(self, rt: WorkerRuntime, state: WorkerState, detail: str | None = None, *,
             publish: bool = True) -> None:
        """The one place a worker's state is written: through the transition table."""
        check_transition(rt.name, rt.state, state)
        rt.state = state
        if publish:
            self._events.publish(rt.name, state.value, detail)

    def manually_stopped(self, name: str) -> bool:
        """Whether the user stopped ``name`` (an automatic start leaves it alone)."""
        rt = self._runtimes.get(name)
        return rt is not None and rt.manual_stop

    async def start(self, name: str, progress: Progress | None = None, *,
                    auto: bool = False) -> tuple[WorkerRuntime, list[str]]:
        """Start ``name`` unless it runs already (idempotent). A manual start clears a manual
        stop; an automatic one never overrides it. Raises ``Conflict`` while another operation
        on the worker is in progress, and whatever ``launch`` raises."""
        rt = self.runtime(name)
        if rt.lock.locked():
            raise Conflict(f"worker '{name}' is busy ({rt.state.value}); try again shortly")
        async with rt.lock:
            if auto and rt.manual_stop:
                return rt, []
            if not auto:
                rt.manual_stop = False
            if rt.state is WorkerState.RUNNING:
                return rt, []
            self._cancel_backoff(rt)
            return rt, await self._launch_locked(rt, progress, auto=auto)

    async def _launch_locked(self, rt: WorkerRuntime, progress: Progress | None, *,
                             auto: bool, failed: WorkerState = WorkerState.STOPPED) -> list[str]:
        """Launch under the worker's lock; a launch that raises leaves it ``failed``."""
        self._set(rt, WorkerState.PREPARING)

        def relay(phase: BootPhase, message: str) -> None:
            state = BOOT_PHASES[phase][0]
            if state is not rt.state and state in TRANSITIONS[rt.state]:
                self._set(rt, state, message)
            if progress is not None:
                progress(phase, message)

        try:
            launched = await self._launch(rt.name, relay)
        except BaseException as exc:
            self._set(rt, failed, f"start failed: {exc}")
            raise
        if rt.state is not WorkerState.STARTING:
            self._set(rt, WorkerState.STARTING)
        self._adopt(rt, launched.task, launched.isolation, auto=auto)
        return launched.warnings

    def adopt(self, name: str, task: SandboxTask, isolation: str | None) -> WorkerRuntime:
        """Take over a sandbox found running at daemon start (reattach). Who started it is not
        known, so it counts as a manual start: the engine-down grace must not stop a worker
        the user started by hand."""
        rt = self.runtime(name)
        self._adopt(rt, task, isolation, auto=False)
        return rt

    def _adopt(self, rt: WorkerRuntime, task: SandboxTask, isolation: str | None, *,
               auto: bool) -> None:
        rt.task, rt.isolation, rt.auto_started = task, isolation, auto
        rt.started_at = time.time()
        self._set(rt, WorkerState.RUNNING, f"pid {task.pid}")
        rt.monitor = self._tasks.create_task(self._watch(rt, task), name=f"watch:{rt.name}")

    async def _watch(self, rt: WorkerRuntime, task: SandboxTask) -> None:
        status = await task.wait()
        await task.delete()
        rt.last_exit_code = status.exit_code
        rt.last_error = status.error
        if rt.task is not task:
            return
        rt.task = None
        if rt.state is WorkerState.STOPPING or rt.manual_stop:
            if rt.state is not WorkerState.STOPPING:  # stopped by hand, not through stop()
                self._set(rt, WorkerState.STOPPING, publish=False)
            self._set(rt, WorkerState.STOPPED, f"exit code {status.exit_code}")
            return
        ran_for = time.time() - (rt.started_at or time.time())
        rt.failures = 1 if ran_for >= HEALTHY_RESET_S else rt.failures + 1
        self._set(rt, WorkerState.CRASHED, f"exit code {status.exit_code}"
                  + (f": {status.error}" if status.error else ""))
        delay = backoff_delay(rt.failures)
        self._set(rt, WorkerState.BACKOFF, f"restarting in {delay:g}s")
        rt.backoff = self._tasks.create_task(self._restart_after(rt, delay),
                                             name=f"backoff:{rt.name}")

    async def _restart_after(self, rt: WorkerRuntime, delay: float) -> None:
        await asyncio.sleep(delay)
        async with rt.lock:
            if rt.state is not WorkerState.BACKOFF or rt.manual_stop:
                return
            rt.backoff = None
            rt.restarts += 1
            try:
                await self._launch_locked(rt, None, auto=rt.auto_started,
                                          failed=WorkerState.CRASHED)
            except Exception as exc:  # noqa: BLE001 - a failed restart is a crash, not a daemon bug
                log.warning("restart of %s failed: %s", rt.name, exc)
                rt.failures += 1
                delay = backoff_delay(rt.failures)
                self._set(rt, WorkerState.BACKOFF, f"restart failed: {exc}")
                rt.backoff = self._tasks.create_task(self._restart_after(rt, delay),
                                                     name=f"backoff:{rt.name}")

    def _cancel_backoff(self, rt: WorkerRuntime) -> None:
        if rt.backoff is not None:
            rt.backoff.cancel()
            rt.backoff = None

    async def stop(self, name: str, timeout: float, *, manual: bool = True) -> WorkerRuntime:
        """SIGTERM, then SIGKILL after ``timeout``; wins over a pending restart. Idempotent."""
        rt = self.runtime(name)
        if manual:
            rt.manual_stop = True
        self._cancel_backoff(rt)
        async with rt.lock:
            if rt.state is WorkerState.BACKOFF or rt.state is WorkerState.CRASHED:
                self._set(rt, WorkerState.STOPPED, "stopped while waiting to restart")
            task, monitor = rt.task, rt.monitor
            if task is None or rt.state is not WorkerState.RUNNING:
                return rt
            self._set(rt, WorkerState.STOPPING)
            await task.stop(timeout)
            if monitor is not None:
                await monitor
            return rt

    def detach(self, name: str) -> None:
        """Forget a worker without touching its process (used at shutdown with keep-workers)."""
        rt = self._runtimes.pop(name, None)
        if rt is not None:
            self._cancel_backoff(rt)
            if rt.monitor is not None:
                rt.monitor.cancel()
            if rt.task is not None:
                rt.task.close()

    def forget(self, name: str) -> None:
        self._runtimes.pop(name, None)
