"""sd_notify for real: a child process sends READY=1 to a datagram socket we bound, as systemd's."""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.api import sdnotify

CHILD = "from daemon.api import sdnotify; import sys; print(sdnotify.notify(sys.argv[1]))"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="iii-sdn-", dir="/tmp") as tmp:
        yield Path(tmp)


def receiving_socket(address: str) -> socket.socket:
    """A datagram socket like systemd's notify socket: it asks the kernel for sender credentials,
    which is how ``NotifyAccess=main`` tells the main process from anyone else."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.settimeout(30)
    return sock


def receive(sock: socket.socket) -> tuple[bytes, int]:
    """One datagram and the sender's pid (from SCM_CREDENTIALS)."""
    creds_size = struct.calcsize("3i")
    data, ancillary, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(creds_size))
    pids = [struct.unpack("3i", payload[:creds_size])[0]
            for level, kind, payload in ancillary
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS]
    assert len(pids) == 1
    return data, pids[0]


def run_child(notify_socket: str, state: str) -> subprocess.Popen[str]:
    env = dict(os.environ, NOTIFY_SOCKET=notify_socket)
    return subprocess.Popen([sys.executable, "-c", CHILD, state], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_ready_reaches_a_path_socket_from_the_main_process(short_dir: Path) -> None:
    path = str(short_dir / "notify")
    with receiving_socket(path) as sock:
        proc = run_child(path, sdnotify.READY)
        data, sender = receive(sock)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert data == b"READY=1"
    assert sender == proc.pid  # sent by the process itself, so NotifyAccess=main accepts it
    assert out.strip() == "True"


def test_abstract_socket_name_with_at_sign() -> None:
    name = f"iii-test-notify-{uuid.uuid4().hex}"
    with receiving_socket("\0" + name) as sock:
        proc = run_child("@" + name, "STATUS=serving\nREADY=1")
        data, sender = receive(sock)
        out, _err = proc.communicate(timeout=30)
    assert (data, sender, out.strip()) == (b"STATUS=serving\nREADY=1", proc.pid, "True")


def test_unset_or_empty_is_a_no_op() -> None:
    assert sdnotify.notify(sdnotify.READY, environ={}) is False
    assert sdnotify.notify(sdnotify.READY, environ={"NOTIFY_SOCKET": ""}) is False


def test_nobody_listening_is_logged_not_raised(short_dir: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    missing = str(short_dir / "gone")
    with caplog.at_level(logging.WARNING, logger="daemon.api.sdnotify"):
        assert sdnotify.notify(sdnotify.STOPPING, environ={"NOTIFY_SOCKET": missing}) is False
    assert f"could not send 'STOPPING=1' to NOTIFY_SOCKET={missing}" in caplog.text


def test_unsupported_address_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="daemon.api.sdnotify"):
        assert sdnotify.notify(sdnotify.READY, environ={"NOTIFY_SOCKET": "vsock:2:1234"}) is False
    assert "NOTIFY_SOCKET='vsock:2:1234' is not a path or an @abstract name" in caplog.text
