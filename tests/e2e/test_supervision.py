"""Supervision end to end with a real daemon, real registry, real namespace sandboxes and the
stand-in engine (SPEC §9, §10). Workers here are busybox shell loops: fast and observable."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.support.daemon import launchers_of
from tests.support.projects import make_shell_project
from tests.support.registry import free_port
from tests.support.wait import wait_until


def make_project(root: Path, image: str, name: str = "loop") -> Path:
    return make_shell_project(root, image, name, start="echo up; exec sleep 1000")


def test_engine_started_after_add_starts_the_worker(daemon_factory, engine_factory, busybox_image,
                                                    iii_home: Path, tmp_path: Path) -> None:
    port = free_port()
    daemon = daemon_factory(III_URL=f"ws://127.0.0.1:{port}")
    added = daemon.json("worker", "add", str(make_project(tmp_path, busybox_image)))
    assert added["started"] is False
    assert daemon.worker("loop")["status"] == "stopped"
    engine_factory(port)
    wait_until(lambda: daemon.worker("loop")["status"] == "running", 5.0, "auto-start")


def test_engine_down_stops_auto_started_workers_after_grace(daemon_factory, engine_factory,
                                                            busybox_image, iii_home: Path,
                                                            tmp_path: Path) -> None:
    engine = engine_factory()
    (iii_home / "daemon.yaml").write_text("engine_down_grace_s: 1\n")
    daemon = daemon_factory(III_URL=engine.url)
    wait_until(lambda: daemon.json("daemon", "status")["engine"]["reachable"], 5, "engine up")
    added = daemon.json("worker", "add", str(make_project(tmp_path, busybox_image)))
    assert added["started"] is True and added["worker"]["status"] == "running"
    engine.stop()
    wait_until(lambda: daemon.worker("loop")["status"] == "stopped", 10.0, "grace stop")
    assert launchers_of(iii_home, "loop") == []


def test_manual_stop_wins_over_engine_autostart(daemon_factory, engine_factory, busybox_image,
                                                iii_home: Path, tmp_path: Path) -> None:
    engine = engine_factory()
    daemon = daemon_factory(III_URL=engine.url)
    wait_until(lambda: daemon.json("daemon", "status")["engine"]["reachable"], 5, "engine up")
    daemon.json("worker", "add", str(make_project(tmp_path, busybox_image)))
    assert daemon.iii("worker", "stop", "loop").returncode == 0
    engine.stop()
    engine.start()  # engine flaps: the manually stopped worker stays stopped
    wait_until(lambda: daemon.json("daemon", "status")["engine"]["reachable"], 5, "engine back")
    assert daemon.worker("loop")["status"] == "stopped"
    assert daemon.iii("worker", "start", "loop").returncode == 0
    assert daemon.worker("loop")["status"] == "running"


def test_daemon_kill9_reattaches_without_duplicates(daemon_factory, busybox_image,
                                                    iii_home: Path, tmp_path: Path) -> None:
    daemon = daemon_factory()
    daemon.json("worker", "add", str(make_project(tmp_path, busybox_image)))
    assert daemon.iii("worker", "start", "loop").returncode == 0
    before = daemon.worker("loop")
    assert before["status"] == "running" and before["pid"]
    daemon.kill9()
    assert launchers_of(iii_home, "loop") == [before["pid"]]  # the worker survived
    daemon.start()
    after = daemon.worker("loop")
    assert after["status"] == "running" and after["pid"] == before["pid"]
    wait_until(lambda: daemon.worker("loop")["image"] == before["image"] == busybox_image, 10,
               "the manifest to be resolved again after the restart")
    assert daemon.iii("worker", "start", "loop").returncode == 0  # idempotent, not doubled
    assert launchers_of(iii_home, "loop") == [before["pid"]]


def test_killed_worker_is_restarted_with_backoff(daemon_factory, busybox_image, iii_home: Path,
                                                 tmp_path: Path) -> None:
    import json

    daemon = daemon_factory()
    daemon.json("worker", "add", str(make_project(tmp_path, busybox_image)))
    assert daemon.iii("worker", "start", "loop").returncode == 0
    first = daemon.worker("loop")["pid"]
    record = json.loads((iii_home / "managed/loop/launcher.pid").read_text())
    os.kill(record["sandbox_pid"], signal.SIGKILL)
    wait_until(lambda: daemon.worker("loop")["restarts"] == 1
               and daemon.worker("loop")["status"] == "running", 15.0, "restart")
    worker = daemon.worker("loop")
    assert worker["pid"] != first and worker["last_exit_code"] == 128 + signal.SIGKILL
    assert len(launchers_of(iii_home, "loop")) == 1


def test_manual_stop_survives_a_daemon_restart(daemon_factory, engine_factory, busybox_image,
                                               iii_home: Path, tmp_path: Path) -> None:
    engine = engine_factory()
    daemon = daemon_factory(III_URL=engine.url)
    wait_until(lambda: daemon.json("daemon", "status")["engine"]["reachable"], 5, "engine up")
    daemon.json("worker", "add", str(make_project(tmp_path, busybox_image)))
    assert daemon.iii("worker", "stop", "loop").returncode == 0
    daemon.stop()
    daemon.start()  # the engine is up: the restarted daemon auto-starts what it may
    # A second worker added now is auto-started: once it runs, the engine-up pass is done.
    other = daemon.json("worker", "add", str(make_project(tmp_path, busybox_image, "other")))
    assert other["started"] is True
    wait_until(lambda: daemon.json("daemon", "status")["engine"]["reachable"], 5, "engine up")
    assert daemon.worker("loop")["status"] == "stopped"
    assert launchers_of(iii_home, "loop") == []
    assert daemon.iii("worker", "start", "loop").returncode == 0  # a manual start clears it
    daemon.stop()
    daemon.start()
    wait_until(lambda: daemon.worker("loop")["status"] == "running", 10, "auto-start")


def test_reattached_worker_is_not_stopped_by_the_engine_down_grace(
        daemon_factory, engine_factory, busybox_image, iii_home: Path, tmp_path: Path) -> None:
    engine = engine_factory()
    (iii_home / "daemon.yaml").write_text("engine_down_grace_s: 1\n")
    daemon = daemon_factory(III_URL=engine.url)
    wait_until(lambda: daemon.json("daemon", "status")["engine"]["reachable"], 5, "engine up")
    daemon.json("worker", "add", str(make_project(tmp_path, busybox_image)))
    assert daemon.iii("worker", "stop", "loop").returncode == 0
    assert daemon.iii("worker", "start", "loop").returncode == 0  # started by hand
    pid = daemon.worker("loop")["pid"]
    daemon.kill9()
    daemon.start()
    assert daemon.worker("loop")["pid"] == pid  # reattached
    added = daemon.json("worker", "add", str(make_project(tmp_path, busybox_image, "auto")))
    assert added["started"] is True  # auto-started: the grace stops this one
    engine.stop()
    wait_until(lambda: daemon.worker("auto")["status"] == "stopped", 10.0, "grace stop")
    assert daemon.worker("loop")["status"] == "running"
    assert launchers_of(iii_home, "loop") == [pid]


def test_no_hardware_isolation_warning_once_on_add_and_again_on_start(
        daemon_factory, busybox_image, iii_home: Path, tmp_path: Path) -> None:
    daemon = daemon_factory()
    backends = daemon.json("daemon", "status")["isolation"]["backends"]
    if backends.get("libkrun", {}).get("available"):
        pytest.skip("libkrun works here: there is no namespace-fallback warning to show")
    warning = "(no hardware isolation)"
    added = daemon.iii("worker", "add", str(make_project(tmp_path, busybox_image)))
    assert added.returncode == 0, added.stderr
    assert (added.stdout + added.stderr).count(warning) == 1, (added.stdout, added.stderr)
    started = daemon.iii("worker", "start", "loop")
    assert started.returncode == 0, started.stderr
    assert started.stderr.count(warning) == 1, (started.stdout, started.stderr)
    assert started.stderr.startswith("warning: isolation: namespace")
    assert daemon.iii("worker", "stop", "loop").returncode == 0
    as_json = daemon.json("worker", "start", "loop")  # --json, the socket and the engine bus
    assert as_json["status"] == "running"
    assert any(warning in w for w in as_json["warnings"]), as_json
