"""``python -S -m vmm_ffi.exec.enter_server FD``: the daemon's fork server for ``iii worker exec``.

Starting a Python interpreter (and importing msgspec, libseccomp's binding, ...) for every exec
cost more than everything else in ``exec -- true`` put together. So the daemon starts this once
(on the first exec) and keeps it: a *single-threaded* process with everything loaded, which
forks one helper per exec. A fork of a single-threaded process is itself single-threaded, which
``setns`` into a user namespace requires (the daemon cannot fork the helper itself: it has
threads, and a forked copy of a threaded Python process may deadlock on a lock another thread
held). Each helper runs exactly :func:`vmm_ffi.exec.enter.run`, as a freshly started helper did.

The protocol, over a ``SOCK_SEQPACKET`` socket pair (``FD``, one message per datagram, JSON):

- daemon -> server: ``{"id": N, "spec": EnterSpec}`` with the command's stdin, stdout and
  stderr passed as three file descriptors (SCM_RIGHTS);
- server -> daemon: ``{"id": N, "pid": P}`` with a pidfd of the helper (so the daemon can signal
  it without a pid-reuse race), or ``{"id": N, "error": "..."}``; later ``{"id": N, "exit": C}``
  (the helper's exit status as ``os.waitstatus_to_exitcode`` gives it).

Lifetime: the server has PDEATHSIG=SIGKILL and also ends when the daemon's end of the socket
closes; each helper has PDEATHSIG=SIGKILL towards the server, and each command towards its
helper, so a daemon that dies takes every exec along, as before.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import select
import signal
import socket
import sys
from typing import Any

import msgspec

from vmm_ffi import syscalls as sc
from vmm_ffi.errors import LauncherError
from vmm_ffi.exec import enter
from vmm_ffi.isolation import seccomp

STDIO_FDS = 3
MAX_MESSAGE = 1 << 20  # a spec holds argv and env: far below this


def _send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)


def _receive(sock: socket.socket) -> tuple[bytes, list[int]] | None:
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(
        MAX_MESSAGE, socket.CMSG_SPACE(STDIO_FDS * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    if not data:
        for fd in fds:
            os.close(fd)
        return None  # the daemon closed its end
    return data, list(fds)


def _helper(sock: socket.socket, wakeup: tuple[int, int], spec: enter.EnterSpec, fds: list[int]) -> None:
    """In the forked helper: the command's stdio on 0-2, a session of its own (the daemon stops
    a timed-out exec by its process group), then what ``python -m vmm_ffi.exec.enter`` did. Never
    returns."""
    code = 1
    try:
        sock.close()
        signal.set_wakeup_fd(-1)
        for fd in wakeup:
            os.close(fd)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)  # dup2 clears close-on-exec on the copy
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.setsid()
        code = enter.run(spec)
    except BaseException as exc:  # noqa: BLE001 - a forked child must never return
        os.write(2, f"error: cannot start the exec helper: {exc}\n".encode())
    finally:
        os._exit(code)


def _start(sock: socket.socket, wakeup: tuple[int, int], data: bytes, fds: list[int],
           running: dict[int, Any]) -> None:
    """One request: fork its helper, answer with its pidfd (or the reason it cannot run)."""
    req_id: Any = None
    try:
        request = json.loads(data)
        req_id = request["id"]
        spec = msgspec.convert(request["spec"], type=enter.EnterSpec)
        if len(fds) != STDIO_FDS:
            raise ValueError(f"expected {STDIO_FDS} file descriptors, got {len(fds)}")
        pid = os.fork()
        if pid == 0:
            _helper(sock, wakeup, spec, fds)
        pidfd = os.pidfd_open(pid)  # not reaped before we wait: the pid cannot be reused yet
    except (ValueError, KeyError, TypeError, OSError, msgspec.ValidationError) as exc:
        _send(sock, {"id": req_id, "error": str(exc)})
        return
    finally:
        for fd in fds:
            os.close(fd)
    running[pid] = req_id
    try:
        _send(sock, {"id": req_id, "pid": pid}, [pidfd])
    finally:
        os.close(pidfd)  # the daemon has its own copy


def _reap(sock: socket.socket, running: dict[int, Any]) -> None:
    while running:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in running:
            _send(sock, {"id": running.pop(pid), "exit": os.waitstatus_to_exitcode(status)})


def serve(sock: socket.socket) -> int:
    """Answer requests until the daemon's end closes (then the helpers die with this process)."""
    sc.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() == 1:
        return 0  # the daemon died before we asked
    sc.load()
    with contextlib.suppress(LauncherError):  # a helper that needs it reports it missing
        seccomp.load()  # once, here: the helpers fork from a process that has it loaded
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(write_end)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd is written
    running: dict[int, Any] = {}  # helper pid -> request id
    while True:
        try:
            readable, _, _ = select.select([sock.fileno(), read_end], [], [])
        except InterruptedError:
            continue
        if read_end in readable:
            while True:
                try:
                    if not os.read(read_end, 512):
                        break
                except BlockingIOError:
                    break
            _reap(sock, running)
        if sock.fileno() in readable:
            try:
                message = _receive(sock)
            except (ConnectionError, OSError):
                return 0
            if message is None:
                return 0
            _start(sock, (read_end, write_end), message[0], message[1], running)
            _reap(sock, running)  # a helper that ended at once


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m vmm_ffi.exec.enter_server FD", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=int(argv[0]))
    try:
        return serve(sock)
    except (BrokenPipeError, ConnectionError):
        return 0  # the daemon went away while we answered


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
