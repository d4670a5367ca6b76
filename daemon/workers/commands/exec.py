"""``worker.exec``: one command in a running namespace sandbox, on the client's own stdio.

The client passes its stdin, stdout and stderr (or, with a tty, its pty slave three times) over
the socket; the daemon hands exactly those fds to its fork server (``vmm_ffi.exec.enter_server``,
started on the first exec and kept), which forks a helper that enters the sandbox and runs the
command, so the bytes go between the client's terminal and the command without passing through
the daemon, and no Python interpreter starts per exec. The daemon keeps what a terminal cannot:
the exit code, the timeout (SIGTERM, then SIGKILL: exit 124), and the signals a non-tty client
forwards (``worker.exec_signal``), sent through a pidfd of the helper. The fork server dies with
the daemon (PDEATHSIG), each helper with the server, and the command with its helper.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

import msgspec

from client.protocol.messages import WorkerExecParams, WorkerExecResult
from daemon.errors import InvalidArgument, InvalidState, Unavailable
from daemon.sandboxes import SandboxLayout
from daemon.sandboxes.procinfo import read_pid_record
from manifests.spec import RESERVED_ENV_KEYS
from vmm_ffi.exec.enter import EnterSpec
from vmm_ffi.launch import launcher_python_path
from vmm_ffi.params import LaunchParams

EXIT_TIMED_OUT = 124
EXEC_STOP_GRACE_S = 2.0  # a timed-out command: SIGTERM, then SIGKILL after this
STDIO_FDS = 3
_MAX_MESSAGE = 1 << 16


class _Helper:
    """One exec's helper process, as the fork server reported it."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[int] = loop.create_future()  # -> the helper's pidfd
        self.exited: asyncio.Future[int] = loop.create_future()  # -> its exit status
        self.pidfd: int | None = None

    def send_signal(self, signum: int) -> None:
        if self.pidfd is not None and not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signum)

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class ForkServer:
    """The daemon's handle on ``vmm_ffi.exec.enter_server``: started on first use, started again
    after it died (its running execs then end with ``Unavailable``)."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._helpers: dict[int, _Helper] = {}
        self._next_id = 1
        self._lock = asyncio.Lock()

    async def spawn(self, spec: EnterSpec, fds: list[int]) -> _Helper:
        """Ask for a helper running ``spec`` on ``fds`` (the caller closes them); returns once
        it runs."""
        sock = await self._ensure()
        req_id, self._next_id = self._next_id, self._next_id + 1
        helper = self._helpers[req_id] = _Helper()
        data = json.dumps({"id": req_id, "spec": msgspec.to_builtins(spec)}).encode()
        try:
            await self._send(sock, data, fds)
            helper.pidfd = await helper.started
        except BaseException:
            self._helpers.pop(req_id, None)
            raise
        return helper

    def forget(self, helper: _Helper) -> None:
        helper.close()
        for req_id, known in list(self._helpers.items()):
            if known is helper:
                del self._helpers[req_id]

    async def _ensure(self) -> socket.socket:
        async with self._lock:
            if self._sock is not None:
                return self._sock
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-S", "-m", "vmm_ffi.exec.enter_server", str(theirs.fileno()),
                    pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL, env={"PYTHONPATH": launcher_python_path()})
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            ours.setblocking(False)
            asyncio.get_running_loop().add_reader(ours.fileno(), self._readable, ours)
            self._sock = ours
            return ours

    @staticmethod
    async def _send(sock: socket.socket, data: bytes, fds: list[int]) -> None:
        loop = asyncio.get_running_loop()
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        while True:
            try:
                sock.sendmsg([data], rights)
                return
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(sock.fileno(), writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(sock.fileno())
            except OSError as exc:
                raise Unavailable(f"the exec fork server is gone: {exc}") from exc

    def _readable(self, sock: socket.socket) -> None:
        while True:
            try:
                data, ancdata, _flags, _addr = sock.recvmsg(
                    _MAX_MESSAGE, socket.CMSG_SPACE(array.array("i").itemsize))
            except BlockingIOError:
                return
            except OSError:
                data, ancdata = b"", []
            fds = array.array("i")
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
            if not data:
                self._lost(sock)
                return
            self._dispatch(json.loads(data), list(fds))

    def _dispatch(self, message: dict[str, Any], fds: list[int]) -> None:
        helper = self._helpers.get(message.get("id"))  # type: ignore[arg-type]
        if helper is None:
            for fd in fds:
                os.close(fd)
            return
        if "pid" in message and fds and not helper.started.done():
            helper.started.set_result(fds[0])
        elif "error" in message and not helper.started.done():
            helper.started.set_exception(Unavailable(f"cannot start the exec: {message['error']}"))
        elif "exit" in message and not helper.exited.done():
            helper.exited.set_result(int(message["exit"]))
        for fd in fds[1 if "pid" in message else 0:]:
            os.close(fd)

    def _lost(self, sock: socket.socket) -> None:
        asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        if self._sock is sock:
            self._sock = None
        gone = Unavailable("the exec fork server died; the command was stopped")
        for helper in self._helpers.values():
            for future in (helper.started, helper.exited):
                if not future.done():
                    future.set_exception(gone)
        self._helpers.clear()

    async def aclose(self) -> None:
        """Stop the server (its helpers and their commands die with it)."""
        if self._sock is not None:
            self._lost(self._sock)
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
            self._proc = None


class ExecRegistry:
    """The daemon's running execs by ``exec_id`` (for ``worker.exec_signal``), and the fork
    server that starts them."""

    def __init__(self) -> None:
        self._running: dict[str, _Helper] = {}
        self.server = ForkServer()

    def check_free(self, exec_id: str | None) -> None:
        if exec_id is not None and exec_id in self._running:
            raise InvalidArgument(f"exec id {exec_id!r} is already in use")

    @contextlib.contextmanager
    def track(self, exec_id: str | None, helper: _Helper) -> Iterator[None]:
        if exec_id is None:
            yield
            return
        self.check_free(exec_id)
        self._running[exec_id] = helper
        try:
            yield
        finally:
            del self._running[exec_id]

    def signal(self, exec_id: str, signum: int) -> None:
        """Forward ``signum`` to the exec's command (the helper forwards it on)."""
        helper = self._running.get(exec_id)
        if helper is None:
            raise InvalidState(f"no running exec {exec_id!r}")
        helper.send_signal(signum)

    async def aclose(self) -> None:
        await self.server.aclose()


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
    reserved = sorted(set(params.env) & set(RESERVED_ENV_KEYS))
    if reserved:
        raise InvalidArgument(f"-e {reserved[0]}: reserved (set by the system); leave it out")
    return EnterSpec(sandbox_pid=record.launch.sandbox_pid, argv=list(params.argv),
                     env={**launch.env, **params.env},
                     workdir=params.workdir or launch.workdir, tty=params.tty,
                     seccomp=record.launch.seccomp is not None,
                     uid=launch.user.uid if launch.user else 0,
                     gid=launch.user.gid if launch.user else 0,
                     groups=list(launch.user.groups) if launch.user else [])


async def run_exec(spec: EnterSpec, fds: list[int], params: WorkerExecParams,
                   registry: ExecRegistry) -> WorkerExecResult:
    """Start the helper on the client's fds (closed here), wait, enforce the timeout."""
    try:
        if len(fds) != STDIO_FDS:
            raise InvalidArgument("worker.exec needs the command's stdin, stdout and stderr "
                                  f"passed as 3 file descriptors with the request (got {len(fds)})")
        registry.check_free(params.exec_id)
        helper = await registry.server.spawn(spec, fds)
    finally:
        for fd in fds:
            os.close(fd)
    try:
        with registry.track(params.exec_id, helper):
            try:
                code = await asyncio.wait_for(asyncio.shield(helper.exited), params.timeout_s)
            except TimeoutError:
                await stop_helper(helper)
                return WorkerExecResult(exit_code=EXIT_TIMED_OUT, timed_out=True)
            except asyncio.CancelledError:  # the client left: the command goes too
                await stop_helper(helper)
                raise
    finally:
        registry.server.forget(helper)
    return WorkerExecResult(exit_code=128 - code if code < 0 else code)


async def stop_helper(helper: _Helper, grace_s: float = EXEC_STOP_GRACE_S) -> None:
    """SIGTERM (the helper passes it to the command), then SIGKILL after ``grace_s`` (the
    command dies with the helper: PDEATHSIG)."""
    helper.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(helper.exited), grace_s)
    except TimeoutError:
        helper.send_signal(signal.SIGKILL)
        with contextlib.suppress(Unavailable):
            await helper.exited
    except Unavailable:
        pass
