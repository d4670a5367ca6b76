"""The daemon's one engine session under faults (issue 12): the real daemon process, the stand-in
engine as a process that counts every connection, and engines that misbehave. Each test states
what must hold afterwards."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.engine.session import DAEMON_WORKER_NAME
from tests.support.daemon import DaemonProcess, launchers_of
from tests.support.engine import EngineProcess
from tests.support.projects import make_shell_project
from tests.support.wait import wait_until


def daemon_sessions(engine: EngineProcess) -> list[dict[str, Any]]:
    """The connections open at the engine that registered as the daemon."""
    return [c for c in engine.stats()["open"] if c["name"] == DAEMON_WORKER_NAME]


def reachable(daemon: DaemonProcess) -> bool:
    return bool(daemon.json("daemon", "status")["engine"]["reachable"])


def add_loop(daemon: DaemonProcess, tmp_path: Path, image: str, name: str) -> dict[str, Any]:
    project = make_shell_project(tmp_path, image, name, start="exec sleep 1000")
    result: dict[str, Any] = daemon.json("worker", "add", str(project))
    return result


def test_idle_daemon_keeps_one_connection(daemon_factory, engine_factory, busybox_image: str,
                                          tmp_path: Path) -> None:
    """The issue's scenario: one worker running, engine idle. The daemon asks the engine many
    times (background refreshes and every `worker list`) over one connection."""
    engine = engine_factory()
    daemon = daemon_factory(III_URL=engine.url)
    wait_until(lambda: daemon_sessions(engine), 10, "the daemon's session")
    assert add_loop(daemon, tmp_path, busybox_image, "idle")["started"] is True
    calls = engine.stats()["list_calls"]
    # The worker runs but never registers, so the daemon keeps asking about once a second.
    wait_until(lambda: engine.stats()["list_calls"] >= calls + 4, 30, "four more list calls")
    for _ in range(5):
        assert daemon.worker("idle")["engine_registered"] is False
    stats = engine.stats()
    assert stats["connections_opened"] == 1, stats
    assert [c["name"] for c in stats["open"]] == [DAEMON_WORKER_NAME]


def test_engine_killed_mid_session(daemon_factory, engine_factory, busybox_image: str,
                                   iii_home: Path, tmp_path: Path) -> None:
    """SIGKILL of the engine: the daemon sees the session drop (unreachable, engine truth
    unknown), the worker keeps running, and the engine's return costs one connection."""
    engine = engine_factory()
    daemon = daemon_factory(III_URL=engine.url)
    wait_until(lambda: reachable(daemon), 10, "engine up")
    pid = add_loop(daemon, tmp_path, busybox_image, "k")["worker"]["pid"]
    engine.kill()
    wait_until(lambda: not reachable(daemon), 15, "the daemon to see the engine gone")
    worker = daemon.worker("k")
    assert worker["engine_registered"] is None and worker["pid"] == pid
    engine.start()
    wait_until(lambda: reachable(daemon), 10, "the session again")
    assert engine.stats()["connections_opened"] == 1
    assert launchers_of(iii_home, "k") == [pid]
    assert daemon.worker("k")["restarts"] == 0


def test_engine_restarting_ten_times(daemon_factory, engine_factory, busybox_image: str,
                                     iii_home: Path, tmp_path: Path) -> None:
    """Ten restarts in a row: one new connection per restart (no storm), the workers are never
    started twice (same pid, one launcher, no restart)."""
    engine = engine_factory()
    daemon = daemon_factory(III_URL=engine.url)
    wait_until(lambda: daemon_sessions(engine), 10, "the daemon's session")
    pids = {name: add_loop(daemon, tmp_path, busybox_image, name)["worker"]["pid"]
            for name in ("r1", "r2")}
    assert all(pids.values())
    started = time.monotonic()
    for restart in range(10):
        engine.restart()
        wait_until(lambda: daemon_sessions(engine), 10, f"the session after restart {restart}")
        assert engine.stats()["connections_opened"] == 1, restart
        for name, pid in pids.items():
            assert launchers_of(iii_home, name) == [pid]
    print(f"10 engine restarts took {time.monotonic() - started:.1f} s")
    for name, pid in pids.items():
        worker = daemon.worker(name)
        assert worker["pid"] == pid and worker["restarts"] == 0 and worker["status"] == "running"
    assert daemon.log.count("auto-start") == 0  # no failed duplicate auto-start was attempted


class BlackHole:
    """Accepts TCP on a port and never says a word (no WebSocket handshake); counts accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    try:
        yield hole
    finally:
        hole.close()


def test_engine_that_never_completes_the_handshake(daemon_factory, engine_factory,
                                                   black_hole: BlackHole, busybox_image: str,
                                                   tmp_path: Path) -> None:
    """Unreachable while it stays mute (nothing auto-started, `worker list` answers at once),
    tries back off instead of hammering it, and a real engine on that port is picked up."""
    daemon = daemon_factory(III_URL=f"ws://127.0.0.1:{black_hole.port}")
    started = time.monotonic()
    added = add_loop(daemon, tmp_path, busybox_image, "mute")
    assert added["started"] is False
    wait_until(lambda: len(black_hole.accepted) >= 6, 60, "a few tries")
    elapsed = time.monotonic() - started
    assert not reachable(daemon)
    worker = daemon.worker("mute")
    assert worker["status"] == "stopped" and worker["engine_registered"] is None
    # A try is a TCP probe plus a handshake that times out after 2 s, then a backoff: far
    # fewer than the 4 probes a second a refusing port gets.
    assert len(black_hole.accepted) <= 2 * (elapsed / 2.0 + 1) + 2, (len(black_hole.accepted),
                                                                     elapsed)
    port = black_hole.port
    black_hole.close()
    engine = engine_factory(port)
    wait_until(lambda: daemon.worker("mute")["status"] == "running", 30, "auto-start")
    assert engine.stats()["connections_opened"] == 1


@pytest.mark.parametrize("answer", ["error", "garbage", "silent"])
def test_engine_with_a_broken_worker_list(daemon_factory, engine_factory, busybox_image: str,
                                          tmp_path: Path, answer: str) -> None:
    """The session stays (one connection), workers still auto-start, ENGINE is unknown (or, for
    a silent engine, the last answer with its age), and `worker list` stays fast."""
    engine = engine_factory()
    daemon = daemon_factory(III_URL=engine.url)
    wait_until(lambda: reachable(daemon), 10, "engine up")
    add_loop(daemon, tmp_path, busybox_image, "b")
    wait_until(lambda: daemon.worker("b")["engine_registered"] is False, 10, "engine truth")
    engine.set_list_answer(answer)
    calls = engine.stats()["list_calls"]
    wait_until(lambda: engine.stats()["list_calls"] > calls + 1, 10, "the broken answers")
    started = time.monotonic()
    listed = daemon.json("worker", "list")
    took = time.monotonic() - started
    (worker,) = listed["workers"]
    assert worker["status"] == "running"
    if answer == "silent":
        assert worker["engine_registered"] is False and listed["engine_age_s"] > 0
    else:
        assert worker["engine_registered"] is None and "engine_age_s" not in listed
    assert took < 5, took  # bounded by the daemon, not by the engine (generous for load)
    assert reachable(daemon) and engine.stats()["connections_opened"] == 1
    engine.set_list_answer("ok")
    wait_until(lambda: daemon.worker("b")["engine_registered"] is False, 10, "recovery")


async def _register_as(url: str, name: str, registered: threading.Event,
                       done: threading.Event) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.receive_json()
        await ws.send_json({"type": "invokefunction", "function_id": "engine::workers::register",
                            "data": {"name": name, "pid": 1}, "action": {"type": "void"}})
        registered.set()
        while not done.is_set():
            await asyncio.sleep(0.05)


def test_registration_shows_up_and_goes_with_the_worker(daemon_factory, engine_factory,
                                                        busybox_image: str,
                                                        tmp_path: Path) -> None:
    engine = engine_factory()
    daemon = daemon_factory(III_URL=engine.url)
    wait_until(lambda: reachable(daemon), 10, "engine up")
    add_loop(daemon, tmp_path, busybox_image, "reg")
    registered, done = threading.Event(), threading.Event()
    thread = threading.Thread(target=asyncio.run, daemon=True,
                              args=(_register_as(engine.url, "reg", registered, done),))
    thread.start()
    try:
        assert registered.wait(10)
        wait_until(lambda: daemon.worker("reg")["engine_registered"] is True, 5, "registered")
    finally:
        done.set()
        thread.join(10)
    wait_until(lambda: daemon.worker("reg")["engine_registered"] is False, 5, "unregistered")


def test_daemon_kill9_and_stop_leave_no_connection(daemon_factory, engine_factory,
                                                   busybox_image: str, tmp_path: Path) -> None:
    engine = engine_factory()
    daemon = daemon_factory(III_URL=engine.url)
    wait_until(lambda: daemon_sessions(engine), 10, "the daemon's session")
    daemon.kill9()
    wait_until(lambda: engine.stats()["open"] == [], 10, "the engine to see the session gone")
    daemon.start()
    wait_until(lambda: daemon_sessions(engine), 10, "the new daemon's session")
    assert engine.stats()["connections_opened"] == 2
    daemon.stop()
    assert daemon.proc is not None and daemon.proc.returncode == 0
    wait_until(lambda: engine.stats()["open"] == [], 10, "the session closed by the stop")
    assert engine.stats()["connections_opened"] == 2
