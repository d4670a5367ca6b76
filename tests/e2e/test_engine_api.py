"""The management API on the engine bus (SPEC §10), called by the real Python iii SDK through the
stand-in engine, against the real daemon: same shapes as the socket protocol, engine_control
respected, lifecycle events through the engine's trigger mechanism."""

from __future__ import annotations

from pathlib import Path

from tests.support.daemon import DaemonProcess
from tests.support.projects import make_shell_project
from tests.support.wait import wait_until


def test_management_api_with_engine_control(daemon_factory, engine_factory, sdk_caller,
                                            busybox_image: str, iii_home: Path,
                                            tmp_path: Path) -> None:
    engine = engine_factory()
    (iii_home / "daemon.yaml").write_text("engine_control: true\n")
    daemon: DaemonProcess = daemon_factory(III_URL=engine.url)
    wait_until(lambda: daemon.json("daemon", "status")["engine"]["reachable"], 10, "engine up")
    caller = sdk_caller(engine.url)
    assert caller.call("worker::list", {})["workers"] == []
    caller.subscribe({"worker": "bus"})
    caller.call("worker::list", {})  # ordered after the subscription on both connections

    project = make_shell_project(tmp_path, busybox_image, "bus",
                                 start="echo bus-up; exec sleep 1000")
    added = caller.call("worker::add", {"target": str(project)})
    assert added["started"] is True and added["worker"]["status"] == "running"
    socket_view = daemon.worker("bus")
    assert set(added["worker"]) == set(socket_view)  # the socket protocol's Worker, no other
    status = caller.call("worker::status", {"name": "bus"})
    assert set(status) == set(daemon.json("worker", "inspect", "bus"))
    assert status["pid"] == socket_view["pid"] and status["paths"]["logs"].endswith("worker.log")
    wait_until(lambda: "bus-up" in caller.call("worker::logs", {"name": "bus"})["lines"], 10,
               "the worker's output")
    follow = caller.fails("worker::logs", {"name": "bus", "follow": True})
    assert follow["code"] == "invalid_params" and "iii worker logs -f" in follow["message"]

    assert caller.call("worker::stop", {"name": "bus", "timeout_s": 2})["status"] == "stopped"
    assert daemon.worker("bus")["status"] == "stopped"
    assert caller.call("worker::start", {"name": "bus"})["status"] == "running"
    restarted = caller.call("worker::restart", {"name": "bus"})
    assert restarted["status"] == "running" and restarted["pid"] != socket_view["pid"]

    spec = caller.call("worker::validate", {"path": str(project)})
    assert spec["name"] == "bus" and spec["scripts"]["start"] == "echo bus-up; exec sleep 1000"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "iii.worker.yaml").write_text("name: bad\nresources:\n  memory: lots\n")
    invalid = caller.fails("worker::validate", {"path": str(bad)})
    assert invalid["code"] == "invalid_project" and "resources.memory" in invalid["message"]

    assert caller.fails("worker::status", {"name": "nope"})["code"] == "not_found"
    assert caller.fails("worker::start", {"nam": "bus"})["code"] == "invalid_params"
    assert caller.call("worker::remove", {"name": "bus"})["removed"] is True
    assert daemon.json("worker", "list")["workers"] == []

    wait_until(lambda: {"running", "stopping", "stopped", "removed"} <=
               {e["status"] for e in caller.events()}, 10, "lifecycle events")
    # Each event is its own invocation of the caller's function, and the SDK handles those
    # concurrently: the order they land in is not the order sent. Their time says that order.
    events = sorted(caller.events(), key=lambda e: e["time"])
    assert all(e["worker"] == "bus" and set(e) >= {"worker", "status", "time"} for e in events)
    statuses = [e["status"] for e in events]
    assert statuses[:2] == ["added", "preparing"] and statuses.count("running") == 3
    assert statuses[-1] == "removed"
    phases = {e["status"]: e["lifecycle"] for e in events}  # upstream's names beside ours
    assert phases["preparing"] == "starting" and phases["running"] == "running"
    assert phases["stopped"] == "stopped"
    assert engine.stats()["connections_opened"] == 2  # the daemon's session and the caller


def test_mutations_refused_without_engine_control(daemon_factory, engine_factory, sdk_caller,
                                                  busybox_image: str, tmp_path: Path) -> None:
    engine = engine_factory()
    daemon: DaemonProcess = daemon_factory(III_URL=engine.url)
    wait_until(lambda: daemon.json("daemon", "status")["engine"]["reachable"], 10, "engine up")
    daemon.json("worker", "add", str(make_shell_project(tmp_path, busybox_image, "ro",
                                                        start="exec sleep 1000")))
    caller = sdk_caller(engine.url)
    assert [w["name"] for w in caller.call("worker::list", {})["workers"]] == ["ro"]
    for function_id in ("worker::start", "worker::stop", "worker::restart", "worker::remove"):
        refused = caller.fails(function_id, {"name": "ro"})
        assert refused["code"] == "forbidden" and "engine_control: true" in refused["message"]
    refused = caller.fails("worker::add", {"target": "iii-http"})
    assert refused["code"] == "forbidden"
    assert daemon.worker("ro")["status"] == "running"  # nothing was changed
    unknown = caller.fails("worker::lifecycle", {})
    assert unknown["code"] == "function_not_found"
