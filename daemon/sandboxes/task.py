"""``SandboxTask``: the daemon's handle on one launcher process (containerd's Task API).

The lifecycle lives on the launcher *process*: ``start`` spawns it detached (its own session, so
it outlives the daemon), ``wait`` watches it through a pidfd (works for a launcher that is not
our child after a daemon restart) and reads the ``exit.json`` its parent side wrote, ``kill``
signals it (the launcher forwards to the workload), ``stop`` is SIGTERM → wait → SIGKILL, and
``reattach`` adopts a running launcher from ``launcher.pid`` after checking that the pid really
is our launcher for this sandbox (start time + cmdline; PIDs get reused).

Two starts of one sandbox never both run: the starter holds an ``flock`` on
``managed/<name>/.lock`` while starting, and a live launcher in the pid file refuses the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import os
import signal
import time
from collections.abc import Iterator

import msgspec

from daemon.errors import Conflict, InvalidState, Unavailable
from daemon.sandboxes.layout import SandboxLayout
from daemon.sandboxes.procinfo import (
    PidRecord,
    find_launcher,
    is_alive,
    is_our_launcher,
    parent_pid,
    process_start_time,
    read_pid_record,
    write_pid_record,
)
from vmm_ffi.errors import LaunchFailed
from vmm_ffi.launch import LAUNCH_TIMEOUT_S, read_exit, spawn_launcher
from vmm_ffi.libkrun.codesign import CodesignFailed, launcher_interpreter
from vmm_ffi.params import ExitStatus, LaunchParams, LaunchResult

STOP_TIMEOUT_S = 10.0  # SIGTERM → SIGKILL (SPEC §9 default)
KILL_WAIT_S = 5.0  # after SIGKILL of the sandbox, before SIGKILL of the launcher itself
WAIT_POLL_S = 0.05  # liveness polling where pidfd_open is unavailable
EXIT_FILE_GRACE_S = 1.0  # a gone launcher's exit.json may land just after /proc says it died
LAUNCHER_LOST_CODE = 255  # containerd: a launcher that vanished without a record exits 255


class TaskStatus(enum.Enum):
    CREATED = "created"  # handle exists, nothing started
    RUNNING = "running"
    STOPPED = "stopped"


class TaskState(msgspec.Struct, frozen=True, kw_only=True):
    status: TaskStatus
    pid: int | None
    sandbox_pid: int | None
    exit: ExitStatus | None


@contextlib.contextmanager
def sandbox_lock(layout: SandboxLayout) -> Iterator[int]:
    """Hold ``managed/<name>/.lock`` (flock, non-blocking) or raise ``Conflict``."""
    layout.dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"sandbox {layout.name!r} is being started by another operation; "
                           "retry when it has finished") from None
        yield fd
    finally:
        os.close(fd)  # closing the only fd of this open file releases the flock


def read_exit_file(layout: SandboxLayout) -> ExitStatus | None:
    """The last recorded exit of this sandbox (None when none or unreadable)."""
    return read_exit(layout.exit_file)


def _open_pidfd(pid: int, start_time: int) -> int | None:
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    # The pid could have been reused between reading it and opening the fd: check again.
    if process_start_time(pid) != start_time:
        os.close(fd)
        return None
    return fd


class SandboxTask:
    """Handle on one sandbox's launcher. Create with ``SandboxTask(layout)`` then ``start``, or
    adopt a running one with ``SandboxTask.reattach(layout)``.

    >>> task = SandboxTask(layout)                     # doctest: +SKIP
    >>> pid = await task.start(params)                 # doctest: +SKIP
    >>> status = await task.stop(timeout=10)           # doctest: +SKIP
    """

    def __init__(self, layout: SandboxLayout) -> None:
        self.layout = layout
        self.result: LaunchResult | None = None
        self._record: PidRecord | None = None
        self._pidfd: int | None = None
        self._is_child = False
        self._child_status: int | None = None
        self._exit: ExitStatus | None = None
        self._exited: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"SandboxTask({self.layout.name!r}, pid={self.pid})"

    @property
    def pid(self) -> int | None:
        return None if self._record is None else self._record.pid

    @property
    def sandbox_pid(self) -> int | None:
        return None if self._record is None else self._record.sandbox_pid

    # -- start / reattach -------------------------------------------------------------------

    async def start(self, params: LaunchParams, *, locked: bool = False) -> int:
        """Spawn the launcher for ``params``; return its pid once the sandbox is built.

        ``locked=True`` means the caller already holds ``sandbox_lock(layout)`` (``prepare`` does,
        across its one-shot runs). Raises ``Conflict`` when this sandbox is already running or
        being started, ``Unavailable`` when the launcher fails to build the sandbox, and
        ``InvalidState`` when this handle was already started.
        """
        if self._record is not None:
            raise InvalidState(f"sandbox {self.layout.name!r}: this task was already started")
        if locked:
            return await self._spawn(params)
        with sandbox_lock(self.layout):
            return await self._spawn(params)

    async def _spawn(self, params: LaunchParams) -> int:
        """Run the blocking spawn in a thread. Cancelled meanwhile (a stop wins over a start),
        the thread still finishes spawning: wait for it, kill what it spawned, then re-raise,
        so no launcher outlives the start that was given up."""
        spawning = asyncio.ensure_future(asyncio.to_thread(self._start_locked, params))
        try:
            return await asyncio.shield(spawning)
        except asyncio.CancelledError:
            await asyncio.wait({spawning})
            if not spawning.cancelled() and spawning.exception() is None:
                await self.kill_now()
            raise

    def _start_locked(self, params: LaunchParams) -> int:
        lay = self.layout
        running = SandboxTask.reattach(lay)
        if running is not None:
            running.close()
            raise Conflict(f"sandbox {lay.name!r} is already running (launcher pid "
                           f"{running.pid})")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lay.exit_file)
        try:
            # macOS: libkrun needs the hypervisor entitlement on the launcher process itself.
            python, env = launcher_interpreter(lay.home)
        except CodesignFailed as exc:
            raise Unavailable(f"sandbox {lay.name!r} could not start: {exc}") from exc
        try:
            result = spawn_launcher(params, lay.dir, timeout=LAUNCH_TIMEOUT_S, python=python,
                                    extra_env=env)
        except LaunchFailed as exc:
            raise Unavailable(f"sandbox {lay.name!r} could not start: {exc}") from exc
        start_time = process_start_time(result.pid)
        self.result = result
        self._is_child = True
        self._record = PidRecord(pid=result.pid, start_time=start_time or 0,
                                 sandbox_pid=result.sandbox_pid, backend=result.backend,
                                 launch=result)
        if start_time is not None:
            self._pidfd = _open_pidfd(result.pid, start_time)
        write_pid_record(lay.pid_file, self._record)
        return result.pid

    @classmethod
    def reattach(cls, layout: SandboxLayout) -> SandboxTask | None:
        """Adopt the running launcher named in ``launcher.pid``, or None.

        The pid must be alive, have the recorded start time, and run ``-m vmm_ffi.launcher
        <this sandbox's bootstrap.json>``; otherwise the stale pid file is removed.
        """
        record = read_pid_record(layout.pid_file)
        if record is None and layout.bootstrap.exists():
            record = find_launcher(layout.bootstrap)  # spawned, but the pid file never written
            if record is not None:
                write_pid_record(layout.pid_file, record)
        if (record is not None and is_alive(record.pid, record.start_time)
                and is_our_launcher(record.pid, layout.bootstrap)):
            task = cls(layout)
            task._record = record
            task.result = record.launch
            task._pidfd = _open_pidfd(record.pid, record.start_time)
            # No pidfd (old kernel) is fine: wait() then polls /proc. Only a pid that is no
            # longer the recorded process (it changed under us) is rejected.
            if task._pidfd is not None or is_alive(record.pid, record.start_time):
                return task
        with contextlib.suppress(FileNotFoundError):
            os.unlink(layout.pid_file)
        return None

    # -- signals, wait, stop -----------------------------------------------------------------

    def _alive(self) -> bool:
        rec = self._record
        return rec is not None and self._exit is None and is_alive(rec.pid, rec.start_time)

    async def kill(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the launcher (it forwards it to the workload); no-op once it is gone."""
        self._signal_launcher(sig)

    def _signal_launcher(self, sig: int) -> None:
        if not self._alive():
            return
        with contextlib.suppress(ProcessLookupError):
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            elif self._record is not None:
                os.kill(self._record.pid, sig)

    def _kill_sandbox(self) -> None:
        # SIGKILL of the sandbox init ends every sandbox process, and the launcher still
        # records exit.json. Only while it is still the launcher's child (no pid reuse).
        rec = self._record
        if rec is None or rec.sandbox_pid is None or not self._alive():
            return
        if parent_pid(rec.sandbox_pid) == rec.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.sandbox_pid, signal.SIGKILL)
        else:
            self._signal_launcher(signal.SIGKILL)

    async def wait(self, timeout: float | None = None) -> ExitStatus:
        """Wait for the launcher to end and return the recorded exit.

        Raises ``TimeoutError`` after ``timeout`` seconds, ``InvalidState`` if never started.
        """
        if self._exit is not None:
            return self._exit
        if self._record is None:
            raise InvalidState(f"sandbox {self.layout.name!r}: the task was never started")
        await asyncio.wait_for(self._wait_gone(), timeout)
        if self._exit is None:
            self._exit = await self._collect_exit()
        return self._exit

    async def _wait_gone(self) -> None:
        if self._pidfd is not None:
            loop = asyncio.get_running_loop()
            if self._exited is None:
                fut: asyncio.Future[None] = loop.create_future()
                self._exited = fut
                fd = self._pidfd

                def on_exit() -> None:
                    loop.remove_reader(fd)
                    if not fut.done():
                        fut.set_result(None)
                loop.add_reader(fd, on_exit)
            await asyncio.shield(self._exited)
        else:
            while self._alive():
                await asyncio.sleep(WAIT_POLL_S)
        self._reap()

    def _reap(self) -> None:
        if self._is_child and self._child_status is None and self._record is not None:
            try:
                _, status = os.waitpid(self._record.pid, 0)
                self._child_status = status
            except ChildProcessError:
                self._child_status = -1

    async def _collect_exit(self) -> ExitStatus:
        deadline = time.monotonic() + EXIT_FILE_GRACE_S
        while True:
            status = read_exit_file(self.layout)
            if status is not None or time.monotonic() > deadline or self._is_child:
                break
            await asyncio.sleep(WAIT_POLL_S)
        if status is not None:
            return status
        raw = self._child_status
        if raw is not None and raw >= 0 and os.WIFSIGNALED(raw):
            sig = os.WTERMSIG(raw)
            return ExitStatus(exit_code=128 + sig, signal=sig, finished_at=time.time(),
                              error=f"launcher killed by signal {sig}; no exit recorded")
        if raw is not None and raw >= 0:
            return ExitStatus(exit_code=os.WEXITSTATUS(raw), finished_at=time.time(),
                              error="launcher exited without recording an exit")
        return ExitStatus(exit_code=LAUNCHER_LOST_CODE, finished_at=time.time(),
                          error="launcher vanished without recording an exit")

    async def kill_now(self) -> ExitStatus | None:
        """SIGKILL the sandbox init (its pid namespace: every process of the run goes with it),
        then the launcher if it lingers; wait for the exit and forget the task. What a start or
        a setup/install run does when it is cancelled. None when it was never started."""
        if self._record is None:
            return None
        self._kill_sandbox()
        try:
            await self.wait(KILL_WAIT_S)
        except TimeoutError:
            self._signal_launcher(signal.SIGKILL)
            await self.wait(KILL_WAIT_S)
        return await self.delete()

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> ExitStatus:
        """SIGTERM, wait up to ``timeout``, then SIGKILL the sandbox (then the launcher)."""
        if self._record is None:
            raise InvalidState(f"sandbox {self.layout.name!r}: the task was never started")
        self._signal_launcher(signal.SIGTERM)
        try:
            return await self.wait(timeout)
        except TimeoutError:
            pass
        self._kill_sandbox()
        try:
            return await self.wait(KILL_WAIT_S)
        except TimeoutError:
            self._signal_launcher(signal.SIGKILL)
            return await self.wait(KILL_WAIT_S)

    # -- state / cleanup ---------------------------------------------------------------------

    def state(self) -> TaskState:
        """Where the task is now (non-blocking; the exit is known only after ``wait``)."""
        rec = self._record
        if rec is None:
            status = TaskStatus.CREATED
        elif self._alive():
            status = TaskStatus.RUNNING
        else:
            status = TaskStatus.STOPPED
        return TaskState(status=status, pid=self.pid, sandbox_pid=self.sandbox_pid,
                         exit=self._exit)

    async def delete(self) -> ExitStatus | None:
        """Forget a stopped task: remove ``launcher.pid``; return its exit status.

        Raises ``InvalidState`` while it still runs (stop it first).
        """
        if self._alive():
            raise InvalidState(f"sandbox {self.layout.name!r} is still running; stop it first")
        exit_status = self._exit
        if self._record is not None and exit_status is None:
            exit_status = await self.wait()
        rec = read_pid_record(self.layout.pid_file)
        if rec is not None and self._record is not None and rec.pid == self._record.pid:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.layout.pid_file)
        self.close()
        return exit_status

    def close(self) -> None:
        """Release the pidfd (the launcher keeps running)."""
        if self._pidfd is not None:
            if self._exited is not None and not self._exited.done():
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().remove_reader(self._pidfd)
                self._exited.cancel()
            os.close(self._pidfd)
            self._pidfd = None
