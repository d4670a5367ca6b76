"""The daemon's handle on ``vmm_ffi.launcher.zygote`` (started on first use, again after it
died) and :class:`ZygoteTask`, the handle on one launcher it forked.

A zygote launcher is not the daemon's child: it is waited for through its pidfd (readable once
it ended) and stopped through pidfds (no pid-reuse race). ``launcher.pid`` is written as for
any launcher, so a daemon started after a crash finds and stops what is left (``boot.sweep``).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading

import msgspec

from daemon.errors import Unavailable
from daemon.sandboxes import SandboxLayout
from daemon.sandboxes.procinfo import PidRecord, process_start_time, write_pid_record
from vmm_ffi.launch import launcher_python_path, read_line, tail_lines
from vmm_ffi.params import LaunchParams, LaunchResult, decode_result, encode
from vmm_ffi.statefiles import write_atomic

__all__ = ["LauncherZygote", "ZygoteTask"]

ANSWER_TIMEOUT_S = 30.0  # the launcher's LaunchResult line (vmm_ffi.launch.LAUNCH_TIMEOUT_S)
KILL_WAIT_S = 5.0


def _pidfd_ended(pidfd: int, timeout: float) -> bool:
    return bool(select.select([pidfd], [], [], timeout)[0])


class ZygoteTask:
    """One running launcher forked by the zygote: ``alive``, ``stop``, ``close``."""

    def __init__(self, layout: SandboxLayout, pidfd: int, result: LaunchResult) -> None:
        self.layout, self.pidfd, self.result = layout, pidfd, result
        try:
            self.sandbox_pidfd: int | None = os.pidfd_open(result.sandbox_pid)
        except OSError:
            self.sandbox_pidfd = None

    def alive(self) -> bool:
        return self.pidfd >= 0 and not _pidfd_ended(self.pidfd, 0)

    async def stop(self, grace_s: float) -> None:
        """SIGTERM (forwarded to the workload), then SIGKILL the sandbox, then the launcher."""
        for pidfd, signum, wait in ((self.pidfd, signal.SIGTERM, grace_s),
                                    (self.sandbox_pidfd, signal.SIGKILL, KILL_WAIT_S),
                                    (self.pidfd, signal.SIGKILL, KILL_WAIT_S)):
            if not self.alive():
                return
            if pidfd is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signum)
            if await self._ended(wait):
                return

    async def _ended(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ended.done():
                ended.set_result(None)
        loop.add_reader(self.pidfd, readable)
        try:
            await asyncio.wait_for(ended, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(self.pidfd)

    def close(self) -> None:
        for fd in (self.pidfd, self.sandbox_pidfd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.pidfd, self.sandbox_pidfd = -1, None


class LauncherZygote:
    """Forks launchers through one ``vmm_ffi.launcher.zygote`` process (blocking calls: run
    :meth:`spawn` in a thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._next = 1

    def _ensure(self) -> socket.socket:
        if self._sock is not None and self._proc is not None and self._proc.poll() is None:
            return self._sock
        self._discard()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-S", "-m", "vmm_ffi.launcher.zygote", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, env={**os.environ,
                                                "PYTHONPATH": launcher_python_path()})
        except OSError as exc:
            ours.close()
            raise Unavailable(f"cannot start the launcher zygote: {exc}") from exc
        finally:
            theirs.close()
        self._sock = ours
        return ours

    def spawn(self, params: LaunchParams, layout: SandboxLayout) -> ZygoteTask:
        """Write ``bootstrap.json``, fork a launcher for it, wait for its ``LaunchResult``, and
        write ``launcher.pid``. Raises ``Unavailable`` (with the log's tail) when it fails."""
        write_atomic(layout.bootstrap, encode(params) + b"\n", mode=0o600)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(layout.exit_file)
        log_fd = os.open(params.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o640)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        try:
            pidfd = self._request(str(layout.bootstrap), [out_w, log_fd])
        finally:
            os.close(out_w)
            os.close(log_fd)
        try:
            line = read_line(out_r, ANSWER_TIMEOUT_S)
        except TimeoutError:
            line = b""
        finally:
            os.close(out_r)
        try:
            result = decode_result(line)
        except (msgspec.ValidationError, msgspec.DecodeError):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
            tail = " | ".join(tail_lines(params.log_path)[-3:])
            raise Unavailable(f"sandbox {layout.name} could not start: {tail or 'no answer'}"
                              ) from None
        write_pid_record(layout.pid_file, PidRecord(
            pid=result.pid, start_time=process_start_time(result.pid) or 0,
            sandbox_pid=result.sandbox_pid, backend=result.backend, launch=result))
        return ZygoteTask(layout, pidfd, result)

    def _request(self, bootstrap: str, fds: list[int]) -> int:
        with self._lock:
            sock = self._ensure()
            req_id, self._next = self._next, self._next + 1
            data = json.dumps({"id": req_id, "bootstrap": bootstrap}).encode()
            try:
                sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       array.array("i", fds))])
                reply, ancdata, _flags, _addr = sock.recvmsg(
                    1 << 16, socket.CMSG_SPACE(array.array("i").itemsize))
            except OSError as exc:
                self._discard()
                raise Unavailable(f"the launcher zygote is gone: {exc}") from exc
        received = array.array("i")
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received.frombytes(payload[:len(payload) - len(payload) % received.itemsize])
        answer = json.loads(reply) if reply else {"error": "the launcher zygote died"}
        if "pid" not in answer or not received:
            for fd in received:
                os.close(fd)
            raise Unavailable(f"cannot fork a launcher: {answer.get('error')}")
        return int(received[0])

    def _discard(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def close(self) -> None:
        """Stop the zygote (its launchers die with it: PDEATHSIG)."""
        with self._lock:
            self._discard()


def kill_recorded(layout: SandboxLayout) -> bool:
    """After a crash: SIGKILL the sandbox and launcher ``launcher.pid`` names, if that pid is
    still the process that was recorded (same start time). Returns whether one was running."""
    from daemon.sandboxes.procinfo import is_alive, read_pid_record

    record = read_pid_record(layout.pid_file)
    if record is None or not is_alive(record.pid, record.start_time):
        return False
    try:
        pidfd = os.pidfd_open(record.pid)
    except OSError:
        return False
    try:
        if record.sandbox_pid is not None:
            with contextlib.suppress(OSError):
                sandbox = os.pidfd_open(record.sandbox_pid)
                signal.pidfd_send_signal(sandbox, signal.SIGKILL)
                os.close(sandbox)
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        _pidfd_ended(pidfd, KILL_WAIT_S)
    finally:
        os.close(pidfd)
    return True
