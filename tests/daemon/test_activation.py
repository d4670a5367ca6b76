"""Socket activation for real: a listening socket handed to a child as fd 3, the systemd way."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.api.activation import inherited_listen_socket
from daemon.errors import InvalidArgument

# The child adopts fd 3, reports what it saw on stdout, then (if it got a socket) serves one line.
CHILD = r"""
import os, sys
from daemon.api.activation import inherited_listen_socket
from daemon.errors import InvalidArgument
try:
    sock = inherited_listen_socket()
except InvalidArgument as exc:
    print("error:", exc.message, flush=True)
    sys.exit(3)
leaked = sorted(k for k in os.environ if k.startswith("LISTEN_"))
print("leaked:", ",".join(leaked) or "-", flush=True)
if sock is None:
    print("socket: none", flush=True)
    sys.exit(0)
print("socket:", sock.getsockname(), "inheritable:", sock.get_inheritable(), flush=True)
conn, _ = sock.accept()
conn.sendall(b"served by pid %d\n" % os.getpid())
conn.close()
"""

# What systemd does between fork and exec, as a tiny exec wrapper: move the passed sockets onto
# fds 3, 4, ... (inheritable), set LISTEN_PID to this pid (exec keeps it) unless the test set one,
# then exec the real program in place.
FD_SHUFFLE = r"""
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",") if fd]
# Out of the way first (above every target), since a target may be another source.
spare = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for fd in fds]
for fd in fds:
    os.close(fd)
for i, fd in enumerate(spare):
    os.dup2(fd, 3 + i)  # the copy is inheritable
    os.close(fd)
os.environ.setdefault("LISTEN_PID", str(os.getpid()))
os.execv(sys.argv[2], sys.argv[2:])
"""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="iii-act-", dir="/tmp") as tmp:
        yield Path(tmp)


def spawn_activated(fds: list[int], env: dict[str, str], argv: list[str] | None = None,
                    *, whole_env: bool = False) -> subprocess.Popen[str]:
    """Start ``argv`` (default: the CHILD script) with ``fds`` on 3, 4, ... the systemd way;
    no fds means fd 3 is not open at all. ``env`` adds to ours, or replaces it (``whole_env``)."""
    full_env = {} if whole_env else {
        k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    full_env.update(env)
    program = argv or [sys.executable, "-c", CHILD]
    return subprocess.Popen(
        [sys.executable, "-c", FD_SHUFFLE, ",".join(map(str, fds)), *program], env=full_env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, pass_fds=fds)


def spawn_with_fd3(fd: int | None, env: dict[str, str]) -> subprocess.Popen[str]:
    return spawn_activated([] if fd is None else [fd], env)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def test_child_serves_on_the_inherited_socket(short_dir: Path) -> None:
    path = str(short_dir / "iii.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(8)
        # Connect before the child even exists: the backlog holds us, as with systemd.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            proc = spawn_with_fd3(listener.fileno(),
                                  {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "iii-daemon.socket"})
            client.settimeout(30)
            line = client.makefile("rb").readline()
        code, out, err = finish(proc)
    assert code == 0, err
    assert line == b"served by pid %d\n" % proc.pid
    assert "leaked: -" in out  # LISTEN_* removed from the environment after use
    assert f"socket: {path} inheritable: False" in out


def test_listen_pid_of_another_process_is_ignored(short_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(short_dir / "s"))
        listener.listen(1)
        proc = spawn_with_fd3(listener.fileno(), {"LISTEN_FDS": "1", "LISTEN_PID": "1"})
        code, out, err = finish(proc)
    assert code == 0, err
    assert "socket: none" in out
    assert "leaked: -" in out


def bad_fd3(kind: str, short_dir: Path) -> socket.socket | int | None:
    if kind == "tcp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        return sock
    if kind == "dgram":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(short_dir / "d"))
        return sock
    if kind == "unlistened":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(short_dir / "u"))
        return sock
    if kind == "file":
        return os.open(short_dir / "plain", os.O_RDWR | os.O_CREAT, 0o600)
    return None  # "closed"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("tcp", "inherited fd 3 is a AF_INET/SOCK_STREAM socket, expected an AF_UNIX stream"),
        ("dgram", "inherited fd 3 is a AF_UNIX/SOCK_DGRAM socket, expected an AF_UNIX stream"),
        ("unlistened", "inherited fd 3 is an AF_UNIX stream socket that is not listening"),
        ("file", "inherited fd 3 is not a usable socket (Socket operation on non-socket)"),
        ("closed", "inherited fd 3 is not a usable socket (Bad file descriptor)"),
    ],
    ids=["tcp", "datagram", "not-listening", "regular-file", "closed"],
)
def test_wrong_inherited_fd_is_one_clear_error(kind: str, expected: str, short_dir: Path
                                               ) -> None:
    obj = bad_fd3(kind, short_dir)
    fd = obj.fileno() if isinstance(obj, socket.socket) else obj
    try:
        proc = spawn_with_fd3(fd, {"LISTEN_FDS": "1"})
        code, out, err = finish(proc)
    finally:
        if isinstance(obj, socket.socket):
            obj.close()
        elif obj is not None:
            os.close(obj)
    assert code == 3, err
    assert out.count("\n") == 1 and out.startswith("error: socket activation: ")
    assert expected in out


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LISTEN_PID": "{pid}", "LISTEN_FDS": "one"},
         "LISTEN_FDS='one' is not a non-negative integer"),
        ({"LISTEN_FDS": "1", "LISTEN_PID": "-5"}, "LISTEN_PID='-5' is not a non-negative"),
        ({"LISTEN_FDS": "1"}, "LISTEN_FDS is set without LISTEN_PID"),
        ({"LISTEN_PID": "{pid}"}, "LISTEN_PID is set without LISTEN_FDS"),
        ({"LISTEN_PID": "{pid}", "LISTEN_FDS": "2"}, "LISTEN_FDS=2 but the daemon serves on one"),
        ({"LISTEN_PID": "{pid}", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"},
         "LISTEN_FDNAMES='a:b' names 2 fds but LISTEN_FDS=1"),
    ],
    ids=["fds-not-a-number", "negative-pid", "no-pid", "no-fds", "two-unnamed", "names-mismatch"],
)
def test_malformed_variables_are_rejected_and_removed(env: dict[str, str], expected: str) -> None:
    environ = {k: v.format(pid=os.getpid()) for k, v in env.items()}
    environ["OTHER"] = "kept"
    with pytest.raises(InvalidArgument, match=r"^socket activation: ") as info:
        inherited_listen_socket(environ)
    assert expected in info.value.message
    assert environ == {"OTHER": "kept"}


@pytest.mark.parametrize(
    "env",
    [{}, {"LISTEN_PID": "{pid}", "LISTEN_FDS": "0"}, {"LISTEN_PID": "1", "LISTEN_FDS": "1"}],
    ids=["unset", "zero-fds", "other-pid"],
)
def test_nothing_to_take(env: dict[str, str]) -> None:
    environ = {k: v.format(pid=os.getpid()) for k, v in env.items()}
    assert inherited_listen_socket(environ) is None
    assert environ == {}


def test_named_fd_is_picked_among_several(short_dir: Path) -> None:
    """With two fds, the one named after our socket unit (fd 4 here) is the one served on."""
    path = str(short_dir / "named.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as ours:
        other.bind(str(short_dir / "other.sock"))
        other.listen(1)
        ours.bind(path)
        ours.listen(1)
        proc = spawn_activated([other.fileno(), ours.fileno()],
                               {"LISTEN_FDS": "2", "LISTEN_FDNAMES": "extra:iii-daemon.socket"})
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(30)
            client.connect(path)
            line = client.makefile("rb").readline()
        rc, out, err = finish(proc)
    assert rc == 0, err
    assert line == b"served by pid %d\n" % proc.pid
    assert f"socket: {path} " in out


def test_real_daemon_serves_on_the_inherited_socket_and_notifies(short_dir: Path) -> None:
    """`python -m daemon run` started the way iii-daemon.socket/.service start it: the listening
    socket on fd 3 with LISTEN_PID/LISTEN_FDS, NOTIFY_SOCKET set (Type=notify)."""
    activated = str(short_dir / "activated.sock")
    home = short_dir / "home"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LISTEN_", "III_", "NOTIFY_SOCKET"))}
    env.update(III_HOME=str(home), III_NO_AUTOSTART="1", LISTEN_FDS="1",
               LISTEN_FDNAMES="iii-daemon.socket", NOTIFY_SOCKET=str(short_dir / "notify"),
               III_URL="ws://127.0.0.1:9")  # no engine: daemon.info must still answer
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify_sock:
        listener.bind(activated)
        listener.listen(16)
        notify_sock.bind(env["NOTIFY_SOCKET"])
        notify_sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        notify_sock.settimeout(60)
        proc = spawn_activated([listener.fileno()], env,
                               [sys.executable, "-m", "daemon", "run"], whole_env=True)
        try:
            ready, sender = receive_with_pid(notify_sock)
            assert (ready, sender) == (b"READY=1", proc.pid)  # from the main process itself
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(60)
                client.connect(activated)
                client.sendall(b'{"jsonrpc":"2.0","id":7,"method":"daemon.info"}\n')
                reply = json.loads(client.makefile("rb").readline())
            assert reply["id"] == 7 and reply["result"]["pid"] == proc.pid
            assert reply["result"]["home"] == str(home)
            # It served on systemd's socket instead of binding one of its own.
            assert not (home / "iii.sock").exists()
            proc.send_signal(signal.SIGTERM)
            stopping, _ = receive_with_pid(notify_sock)
            assert stopping == b"STOPPING=1"
            _out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def receive_with_pid(sock: socket.socket) -> tuple[bytes, int]:
    size = struct.calcsize("3i")
    data, ancillary, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(size))
    pids = [struct.unpack("3i", payload[:size])[0] for level, kind, payload in ancillary
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS]
    return data, pids[0]
