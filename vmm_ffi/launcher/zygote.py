"""``python -S -m vmm_ffi.launcher.zygote FD``: forks the launchers of ephemeral sandboxes.

Importing the launcher (msgspec, the namespace, network, id-map and cgroup code) costs more
than the rest of a sandbox's start, and each launcher's interpreter heap is private memory the
sandbox keeps while it lives. The daemon starts this process once; it imports the launcher and
loads libseccomp, then forks one launcher per request, which runs
``vmm_ffi.launcher.program.main`` as a freshly started one would: its heap pages stay shared
with every other sandbox's.

Protocol over a ``SOCK_SEQPACKET`` pair (``FD``), one JSON message per datagram:
- daemon -> zygote: ``{"id": N, "bootstrap": PATH}`` with two fds: the launcher's stdout (where
  it prints its ``LaunchResult`` line) and its stderr (the sandbox log);
- zygote -> daemon: ``{"id": N, "pid": P}`` with a pidfd of the launcher, or
  ``{"id": N, "error": "..."}``.
The zygote reaps its launchers (each records its own exit in ``exit.json``). It ends when the
daemon's end of the socket closes or the daemon dies (PDEATHSIG=SIGTERM), and then kills every
launcher it still has, so a daemon that dies takes its ephemeral sandboxes along.
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

from vmm_ffi import syscalls as sc
from vmm_ffi.errors import LauncherError
from vmm_ffi.isolation import seccomp
from vmm_ffi.launcher import exit_recorder, program
from vmm_ffi.network import bridge_leases
from vmm_ffi.params import EXIT_SETUP_FAILED

# The launcher imports these only when it needs them (an id shift, a bridge), not at a fresh
# start; the zygote imports them once, so every launcher it forks shares them.
PRELOADED = (exit_recorder, bridge_leases)

FDS = 2
MAX_MESSAGE = 1 << 16


def _receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(FDS * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    return json.loads(data), list(fds)


def _child(sock: socket.socket, wakeup: tuple[int, int], bootstrap: str, fds: list[int]) -> None:
    """The forked launcher: stdio in place, signal state as after exec, then the launcher's
    ``main``. Never returns."""
    code = EXIT_SETUP_FAILED
    try:
        sock.close()
        signal.set_wakeup_fd(-1)
        for fd in wakeup:
            os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in (null, *fds):
            if fd > 2:
                os.close(fd)
        os.setsid()
        sc.set_parent_death_signal(signal.SIGKILL)
        code = program.main([bootstrap])
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException as exc:  # noqa: BLE001 - a forked child must never return
        with contextlib.suppress(OSError):
            os.write(2, f"[iii-launcher] cannot start: {exc}\n".encode())
    finally:
        os._exit(code)


def _start(sock: socket.socket, wakeup: tuple[int, int], request: dict[str, Any],
           fds: list[int]) -> int | None:
    """Fork one launcher; return its pid (None when it could not be forked)."""
    try:
        if len(fds) != FDS or not isinstance(request.get("bootstrap"), str):
            raise ValueError(f"expected a bootstrap path and {FDS} fds")
        pid = os.fork()
        if pid == 0:
            _child(sock, wakeup, request["bootstrap"], fds)
        pidfd = os.pidfd_open(pid)
    except (ValueError, OSError) as exc:
        sock.send(json.dumps({"id": request.get("id"), "error": str(exc)}).encode())
        return None
    finally:
        for fd in fds:
            os.close(fd)
    try:
        sock.sendmsg([json.dumps({"id": request.get("id"), "pid": pid}).encode()],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [pidfd]))])
    finally:
        os.close(pidfd)
    return pid


def _reap(children: set[int]) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)


def _kill_launchers(children: set[int]) -> None:
    """The daemon is gone: every launcher still running goes too (its sandbox init follows it:
    PDEATHSIG). A launcher's own death signal towards us does not survive its change of ids,
    so we do it here. They are our unreaped children: their pids cannot have been reused."""
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def serve(sock: socket.socket) -> int:
    """Fork launchers on request until the daemon's end closes or the daemon dies (then every
    launcher is killed)."""
    parent = os.getppid()
    sc.set_parent_death_signal(signal.SIGTERM)  # handled below: we take the launchers along
    if os.getppid() != parent or parent == 1:
        return 0
    sc.load()
    with contextlib.suppress(LauncherError):  # a launcher that needs it reports it missing
        seccomp.load()
    wakeup = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wakeup[1])
    for signum in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)  # handlers, so the wakeup fd is written
    children: set[int] = set()
    try:
        while os.getppid() == parent:
            try:
                readable, _, _ = select.select([sock.fileno(), wakeup[0]], [], [])
            except InterruptedError:
                continue
            if wakeup[0] in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wakeup[0], 512):
                        pass
                _reap(children)
            if sock.fileno() in readable:
                try:
                    message = _receive(sock)
                except OSError:
                    return 0
                if message is None:
                    return 0
                pid = _start(sock, wakeup, *message)
                if pid is not None:
                    children.add(pid)
        return 0
    finally:
        _kill_launchers(children)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m vmm_ffi.launcher.zygote FD", file=sys.stderr)
        return 2
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=int(argv[0]))
    try:
        return serve(sock)
    except (BrokenPipeError, ConnectionError):
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
