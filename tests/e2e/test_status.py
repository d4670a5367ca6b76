"""``iii worker status``: a snapshot (plain, --json) and the live view under a real pty, which
follows a stop as it happens."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import III_CLI, DaemonProcess
from tests.support.projects import make_shell_project
from tests.support.wait import wait_until


@pytest.fixture
def running(daemon_factory, busybox_image: str, tmp_path: Path) -> DaemonProcess:
    project = make_shell_project(tmp_path, busybox_image, "watched",
                                 start="echo hello-from-watched; exec sleep 1000")
    daemon = daemon_factory()
    assert daemon.iii("worker", "add", str(project)).returncode == 0
    assert daemon.json("worker", "start", "watched")["status"] == "running"
    wait_until(lambda: "hello-from-watched" in daemon.iii("worker", "logs", "watched").stdout,
               10, "the worker's output")
    return daemon


def test_snapshot_json_and_plain(running: DaemonProcess) -> None:
    snap = json.loads(running.iii("worker", "status", "watched", "--json").stdout)
    assert snap["worker"]["status"] == "running" and snap["worker"]["pid"]
    assert "hello-from-watched" in snap["log_tail"]
    plain = running.iii("worker", "status", "watched", "--no-watch").stdout
    assert "phase:      running" in plain and "hello-from-watched" in plain
    missing = running.iii("worker", "status", "nosuch", "--no-watch")
    assert missing.returncode == 1 and missing.stderr.startswith("error: ")


def test_live_view_follows_a_stop(running: DaemonProcess) -> None:
    master, slave = pty.openpty()
    view = subprocess.Popen([III_CLI, "worker", "status", "watched"], stdin=slave,
                            stdout=slave, stderr=slave, env={**running.env, "TERM": "xterm",
                                                            "COLUMNS": "120"},
                            start_new_session=True)
    os.close(slave)
    screen = bytearray()

    def shows(text: bytes) -> bool:
        try:
            screen.extend(os.read(master, 65536))
        except OSError:
            pass
        return text in screen
    try:
        wait_until(lambda: shows(b"running"), 30, "the live view")
        assert b"hello-from-watched" in screen
        screen.clear()
        assert running.json("worker", "stop", "watched")["status"] == "stopped"
        wait_until(lambda: shows(b"stopped"), 30, "the view to show the stop")
    finally:
        os.killpg(view.pid, signal.SIGINT)
        try:
            view.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(view.pid, signal.SIGKILL)
            view.wait(10)
        os.close(master)
