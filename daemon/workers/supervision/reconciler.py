"""One reconciler per worker (SPEC §9, STYLE §5): the only code that launches, stops, restarts
or backs off that worker.

Callers only write the worker's desired state (``request``) or queue a one-shot step (``job``:
an add's prepare, an export) and wait for the outcome. The reconciler's task compares desired
with actual and takes one step at a time::

    request(want, why) ──► desired ──┐          ┌─► launch (pull, provision, sync, setup,
    job(step)          ──► jobs ─────┼─► _next ─┤    install, start)       [cancellable]
    process exit       ──► actual ───┘          ├─► stop (SIGTERM … SIGKILL)
                                                ├─► backoff sleep          [cancellable]
                                                ├─► watch the process      [cancellable]
                                                └─► job                    [cancellable]

A newer desired state cancels the step in flight when that step no longer leads there: a stop
cancels a launch (killing a running setup/install's sandbox, ``daemon/sandboxes/boot.py``), a
backoff sleep or a job. Two callers asking for the same state both wait for it; nobody is told
"busy". A launch that fails waits for a newer request; a crash backs off and restarts.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from daemon.errors import Conflict
from daemon.events import EventBus
from daemon.sandboxes import BootPhase
from daemon.workers.supervision.desired import IDLE, Desired, Want, Why
from daemon.workers.supervision.interruptible import interruptible
from daemon.workers.supervision.runtime import (
    BootFanOut,
    BootSink,
    Job,
    JobControl,
    Launch,
    WorkerRuntime,
)
from daemon.workers.supervision.state import (
    BOOT_PHASES,
    DEFAULT_BACKOFF,
    TRANSITIONS,
    Backoff,
    WorkerState,
    check_transition,
)

log = logging.getLogger("iii.daemon.reconciler")
T = TypeVar("T")
S = WorkerState


class Reconciler:
    """Drives one worker towards its desired state. Build it, then ``run_in`` a task owner."""

    def __init__(self, name: str, launch: Launch, events: EventBus,
                 persist: Callable[[Desired], None], *, desired: Desired = IDLE,
                 stop_timeout_s: float = 10.0, backoff: Backoff = DEFAULT_BACKOFF) -> None:
        self.rt = WorkerRuntime(name, desired=desired)
        self._backoff_policy = backoff
        self._launch, self._events, self._persist = launch, events, persist
        self._default_timeout = self._stop_timeout = stop_timeout_s
        self._gen = 0  # bumped by every request: a newer one supersedes what is in flight
        self._gave_up_gen = -1  # a failed launch: no retry until a newer request
        self._failed_gen = -1  # the waiters up to this request are told the launch failed
        self._failure: BaseException | None = None
        self._restart_pending = False
        self._backoff_until = 0.0
        self._backoff_gen = -1
        self._jobs: collections.deque[Job[Any]] = collections.deque()
        self._sinks: list[BootSink] = []
        self._warnings: list[str] = []
        self._step: str | None = None  # "launch" | "stop" | "job" | "backoff" | "watch"
        self._closing: str | None = None  # "stop" | "detach"
        self.closed = False
        self._wake = asyncio.Event()
        self._tick: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[Any] | None = None

    @property
    def name(self) -> str:
        return self.rt.name

    def run_in(self, create_task: Callable[..., asyncio.Task[Any]]) -> None:
        self._task = create_task(self._run(), name=f"reconcile:{self.name}")

    # -- intent ----------------------------------------------------------------------------------

    def request(self, want: Want, why: Why, *, timeout: float | None = None,
                restart: bool = False) -> int:
        """Write the desired state (persisted when it changed); return the request's number."""
        if self.closed or self._closing is not None:
            raise Conflict(f"worker '{self.name}' is being removed")
        self._gen += 1
        if want is Want.STOPPED:
            self._stop_timeout = self._default_timeout if timeout is None else timeout
        self._restart_pending = self._restart_pending or restart
        desired = Desired(want=want, why=why)
        if desired != self.rt.desired:
            self.rt.desired = desired
            try:
                self._persist(desired)
            except OSError as exc:  # it still holds for this daemon's life
                log.warning("could not persist the desired state of %s: %s", self.name, exc)
        self._wake.set()
        return self._gen

    async def start(self, why: Why, sink: BootSink | None = None) -> list[str]:
        """Want it running; return once it runs (warnings of its launch), or raise what made
        the launch fail. Idempotent: a running worker returns at once, a start in flight is
        joined. A stop given meanwhile wins: this then returns with the worker stopped."""
        return await self._until_running(self.request(Want.RUNNING, why), sink)

    async def restart(self, sink: BootSink | None = None) -> list[str]:
        """Stop it if it runs, then start it; keeps why it runs (a stopped one: the user's)."""
        desired = self.rt.desired
        why = desired.why if desired.want is Want.RUNNING else Why.USER
        return await self._until_running(self.request(Want.RUNNING, why, restart=True), sink)

    async def stop(self, why: Why, timeout: float | None = None) -> None:
        """Want it stopped; return once no process runs and nothing is launching. Wins over a
        launch, an install, a backoff or a job in flight (they are cancelled)."""
        gen = self.request(Want.STOPPED, why, timeout=timeout)
        await self._until(lambda: self.closed or self._superseded(gen, Want.STOPPED)
                          or (self.rt.state is S.STOPPED
                              and self._step not in ("launch", "stop", "stoppable job")))

    def auto_start(self, why: Why) -> None:
        """The daemon's own start (engine up, a hand-added entry): never over a user's stop."""
        desired = self.rt.desired
        if self.closed or self._closing is not None or desired.manual_stop:
            return
        if desired.want is Want.RUNNING:
            if self._gave_up_gen >= self._gen:  # its last start failed: try again
                self.request(Want.RUNNING, desired.why)
            return
        self.request(Want.RUNNING, why)

    def grace_stop(self) -> bool:
        """The engine stayed down past the grace: stop it if the daemon started it."""
        if self.closed or self._closing is not None or not self.rt.desired.automatic:
            return False
        self.request(Want.STOPPED, Why.ENGINE)
        return True

    async def job(self, body: Callable[[JobControl], Coroutine[Any, Any, T]], *,
                  cancel_on_stop: bool) -> T:
        """Run ``body`` as this worker's next step (nothing launches or stops meanwhile); a stop
        requested after it was queued cancels it when ``cancel_on_stop`` (the body sees
        ``control.stopped``), a removal always does (``Conflict``)."""
        if self.closed or self._closing is not None:
            raise Conflict(f"worker '{self.name}' is being removed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.append(Job(body, future, self._gen, cancel_on_stop))
        self._wake.set()
        return await future

    async def close(self, *, stop: bool) -> None:
        """End the reconciler: cancel what is in flight and queued; with ``stop`` also stop the
        process (remove, shutdown), else leave it running (``--keep-workers``). The desired
        state on disk is left as it was."""
        if self._closing is None:
            self._closing = "stop" if stop else "detach"
            self._wake.set()
        if self._task is not None:
            await asyncio.wait({self._task})

    # -- waiting -----------------------------------------------------------------------------------

    def _superseded(self, gen: int, want: Want) -> bool:
        return self._gen > gen and self.rt.desired.want is not want

    async def _until_running(self, gen: int, sink: BootSink | None) -> list[str]:
        if sink is not None:
            self._sinks.append(sink)
        try:
            await self._until(lambda: self.closed or self._failed_gen >= gen
                              or self._superseded(gen, Want.RUNNING)
                              or (self.rt.state is S.RUNNING and not self._restart_pending))
        finally:
            if sink is not None:
                self._sinks.remove(sink)
        if self._failed_gen >= gen and self.rt.state is not S.RUNNING \
                and self._failure is not None:
            raise self._failure
        if self.closed and self.rt.state is not S.RUNNING:
            raise Conflict(f"worker '{self.name}' was removed while it was starting")
        return list(self._warnings)

    async def _until(self, done: Callable[[], bool]) -> None:
        while not done():
            await asyncio.shield(self._tick)

    def _pulse(self) -> None:
        tick, self._tick = self._tick, asyncio.get_running_loop().create_future()
        tick.set_result(None)

    def _boot_phase(self, phase: BootPhase, message: str) -> None:
        """A launch's boot step, as the worker's state (where the transition table allows)."""
        state = BOOT_PHASES[phase][0]
        if state is not self.rt.state and state in TRANSITIONS[self.rt.state]:
            self._set(state, message)

    def _set(self, state: WorkerState, detail: str | None = None, *,
             publish: bool = True) -> None:
        """The one place a worker's state is written: through the transition table."""
        check_transition(self.name, self.rt.state, state)
        self.rt.state = state
        if publish:
            self._events.publish(self.name, state.value, detail)
        self._pulse()

    # -- the loop ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self._closing is None:
                self._wake.clear()
                step = self._next()
                if step is None:
                    await self._wake.wait()
                else:
                    await step()
                self._pulse()
            await self._finish()
        finally:
            self.closed = True
            for job in self._jobs:
                if not job.future.done():
                    job.future.set_exception(Conflict(f"worker '{self.name}' was removed"))
            self._jobs.clear()
            self._pulse()

    def _next(self) -> Callable[[], Awaitable[None]] | None:
        rt = self.rt
        if self._jobs:
            return self._run_job
        want = rt.desired.want
        if want is Want.STOPPED or self._restart_pending:
            if rt.state is S.RUNNING:
                return self._stop_process
            if rt.state in (S.BACKOFF, S.CRASHED):
                return self._settle_stopped
            self._restart_pending = False
            if want is Want.STOPPED:
                return None
        if rt.state is S.RUNNING:
            return self._watch
        if self._gave_up_gen >= self._gen:
            return None
        if rt.state is S.BACKOFF and self._backoff_gen >= self._gen \
                and time.monotonic() < self._backoff_until:
            return self._backoff
        return self._launch_step

    # -- the steps ---------------------------------------------------------------------------------

    async def _launch_step(self) -> None:
        rt = self.rt
        after_crash = rt.state in (S.BACKOFF, S.CRASHED)
        if after_crash:
            rt.restarts += 1
        gen = self._gen
        self._set(S.PREPARING)
        self._step = "launch"
        try:
            done = await interruptible(self._wake, 
                self._launch(self.name, BootFanOut(self._boot_phase, self._sinks)),
                lambda: self._closing is not None or self.rt.desired.want is Want.STOPPED)
        finally:
            self._step = None
        if done is None:
            self._set(S.STOPPED, "stopped before it started")
            return
        exc = done.exception()
        if exc is not None:
            self._launch_failed(exc, gen, after_crash)
            return
        launched = done.result()
        if rt.state is not S.STARTING:
            self._set(S.STARTING)
        rt.task, rt.isolation = launched.task, launched.isolation
        rt.started_at = time.time()
        self._warnings = list(launched.warnings)
        self._set(S.RUNNING, f"pid {launched.task.pid}")

    def _launch_failed(self, exc: BaseException, gen: int, after_crash: bool) -> None:
        rt = self.rt
        self._failure, self._failed_gen = exc, self._gen
        if after_crash:  # a failed restart is a crash: back off again, longer
            log.warning("restart of %s failed: %s", self.name, exc)
            rt.failures += 1
            self._set(S.CRASHED, f"start failed: {exc}")
            self._back_off(f"restart failed: {exc}")
            return
        self._gave_up_gen = self._gen
        self._set(S.STOPPED, f"start failed: {exc}")

    def _back_off(self, detail: str | None = None) -> None:
        delay = self._backoff_policy.delay(self.rt.failures)
        self._backoff_until = time.monotonic() + delay
        self._backoff_gen = self._gen
        self._set(S.BACKOFF, detail or f"restarting in {delay:g}s")

    async def _backoff(self) -> None:
        self._step = "backoff"
        try:
            await interruptible(self._wake, asyncio.sleep(self._backoff_until - time.monotonic()),
                                      lambda: True)  # any request: look again
        finally:
            self._step = None

    async def _watch(self) -> None:
        rt = self.rt
        task = rt.task
        assert task is not None
        self._step = "watch"
        try:
            done = await interruptible(self._wake, task.wait(), lambda: True)
        finally:
            self._step = None
        if done is None:
            return
        status = done.result()
        await task.delete()
        rt.task = None
        rt.last_exit_code, rt.last_error = status.exit_code, status.error
        if rt.desired.want is Want.STOPPED:  # it ended as it was asked to stop
            self._set(S.STOPPING, publish=False)
            self._set(S.STOPPED, f"exit code {status.exit_code}")
            return
        ran_for = time.time() - (rt.started_at or time.time())
        rt.failures = 1 if ran_for >= self._backoff_policy.max_s else rt.failures + 1
        self._set(S.CRASHED, f"exit code {status.exit_code}"
                  + (f": {status.error}" if status.error else ""))
        self._back_off()

    async def _stop_process(self) -> None:
        rt = self.rt
        task = rt.task
        assert task is not None
        self._step = "stop"
        try:
            self._set(S.STOPPING)
            status = await task.stop(self._stop_timeout)
            await task.delete()
        finally:
            self._step = None
        rt.task = None
        rt.last_exit_code, rt.last_error = status.exit_code, status.error
        self._restart_pending = False
        self._set(S.STOPPED, f"exit code {status.exit_code}")

    async def _settle_stopped(self) -> None:
        self._set(S.STOPPED, "stopped while waiting to restart")

    async def _run_job(self) -> None:
        job = self._jobs.popleft()

        def abort() -> bool:
            stop = job.cancel_on_stop and self._gen > job.gen \
                and self.rt.desired.want is Want.STOPPED
            if not job.control.cancellable:
                return False
            job.control.stopped = stop and self._closing is None
            return stop or self._closing is not None

        self._step = "stoppable job" if job.cancel_on_stop else "job"
        try:
            done = await interruptible(self._wake, job.body(job.control), abort)
        finally:
            self._step = None
        if job.future.done():
            return
        if done is None:
            job.future.set_exception(Conflict(
                f"worker '{self.name}' was {'stopped' if job.control.stopped else 'removed'} "
                "meanwhile"))
        elif done.exception() is not None:
            job.future.set_exception(done.exception())  # type: ignore[arg-type]
        else:
            job.future.set_result(done.result())

    async def _finish(self) -> None:
        """Closing: what was in flight is cancelled already; stop the process if asked."""
        rt = self.rt
        if self._closing == "stop" and rt.state is S.RUNNING and rt.task is not None:
            await self._stop_process()
        elif rt.state in (S.BACKOFF, S.CRASHED):
            self._set(S.STOPPED, "stopped while waiting to restart")
        elif self._closing == "detach" and rt.task is not None:
            rt.task.close()


__all__ = ["Reconciler"]
