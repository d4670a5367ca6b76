"""``worker.exec``: one command in a running namespace sandbox, on the client's own stdio.

The client passes its stdin, stdout and stderr (or, with a tty, its pty slave three times) over
the socket; the daemon spawns ``python -m vmm_ffi.enter`` on exactly those fds, so the bytes go
between the client's terminal and the command without passing through the daemon. The daemon
keeps what a terminal cannot: the exit code, the timeout (SIGTERM, then SIGKILL: exit 124), and
the signals a non-tty client forwards (``worker.exec_signal``). The helper dies with the daemon
(PDEATHSIG), and the command with the helper.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator

import msgspec

from client.protocol import WorkerExecParams, WorkerExecResult
from daemon.errors import InvalidArgument, InvalidState, Unavailable
from daemon.sandboxes import SandboxLayout
from daemon.sandboxes.env import RESERVED_KEYS
from daemon.sandboxes.procinfo import read_pid_record
from vmm_ffi.enter import EnterSpec
from vmm_ffi.launch import launcher_python_path
from vmm_ffi.params import LaunchParams

EXIT_TIMED_OUT = 124
EXEC_STOP_GRACE_S = 2.0  # a timed-out command: SIGTERM, then SIGKILL after this
STDIO_FDS = 3


class ExecRegistry:
    """The daemon's running execs by ``exec_id`` (for ``worker.exec_signal``)."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.subprocess.Process] = {}

    @contextlib.contextmanager
    def track(self, exec_id: str | None, proc: asyncio.subprocess.Process) -> Iterator[None]:
        if exec_id is None:
            yield
            return
        if exec_id in self._running:
            raise InvalidArgument(f"exec id {exec_id!r} is already in use")
        self._running[exec_id] = proc
        try:
            yield
        finally:
            del self._running[exec_id]

    def signal(self, exec_id: str, signum: int) -> None:
        """Forward ``signum`` to the exec's command (the helper forwards it on)."""
        proc = self._running.get(exec_id)
        if proc is None:
            raise InvalidState(f"no running exec {exec_id!r}")
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)


def enter_spec(layout: SandboxLayout, params: WorkerExecParams) -> EnterSpec:
    """What to run where: the sandbox init from ``launcher.pid``, env and workdir from the
    worker's own launch params (``bootstrap.json``) plus the exec's. Blocking (file reads)."""
    record = read_pid_record(layout.pid_file)
    if record is None or record.launch is None or record.backend != "namespace":
        raise InvalidState(f"worker '{layout.name}' has no running namespace sandbox to exec "
                           "into (libkrun guests need an in-guest agent: not built yet)")
    try:
        launch = msgspec.json.decode(layout.bootstrap.read_bytes(), type=LaunchParams)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Unavailable(f"cannot read the sandbox's launch params: {exc}") from exc
    reserved = sorted(set(params.env) & set(RESERVED_KEYS))
    if reserved:
        raise InvalidArgument(f"-e {reserved[0]}: reserved (set by the system); leave it out")
    return EnterSpec(sandbox_pid=record.launch.sandbox_pid, argv=list(params.argv),
                     env={**launch.env, **params.env},
                     workdir=params.workdir or launch.workdir, tty=params.tty,
                     seccomp=record.launch.seccomp is not None)


async def run_exec(spec: EnterSpec, fds: list[int], params: WorkerExecParams,
                   registry: ExecRegistry) -> WorkerExecResult:
    """Spawn the helper on the client's fds (closed here), wait, enforce the timeout."""
    try:
        if len(fds) != STDIO_FDS:
            raise InvalidArgument("worker.exec needs the command's stdin, stdout and stderr "
                                  f"passed as 3 file descriptors with the request (got {len(fds)})")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-S", "-m", "vmm_ffi.enter", msgspec.json.encode(spec).decode(),
            stdin=fds[0], stdout=fds[1], stderr=fds[2], start_new_session=True,
            env={"PYTHONPATH": launcher_python_path()})
    finally:
        for fd in fds:
            os.close(fd)
    with registry.track(params.exec_id, proc):
        try:
            code = await asyncio.wait_for(proc.wait(), params.timeout_s)
        except TimeoutError:
            await _stop(proc)
            return WorkerExecResult(exit_code=EXIT_TIMED_OUT, timed_out=True)
        except asyncio.CancelledError:  # the client left: the command goes too
            await _stop(proc)
            raise
    return WorkerExecResult(exit_code=128 - code if code < 0 else code)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), EXEC_STOP_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
