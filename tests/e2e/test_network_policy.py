"""The network policy end to end (a real daemon, the stand-in engine, real sandboxes through
pasta and slirp4netns): the default reaches the engine and no other host loopback port, a
worker's entry opens one, ``none`` runs no helper, and a killed helper is logged and the worker
is restarted and back on the engine."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import launchers_of
from tests.support.projects import make_shell_project
from tests.support.proxy import tcp_service
from tests.support.wait import wait_until
from vmm_ffi.network import find_pasta, find_slirp4netns, tun_problem

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(tun_problem() is not None, reason="/dev/net/tun is not ours")]


def probe_script(engine_port: int, other_port: int) -> str:
    """Probe the engine (it answers HTTP) and another host loopback port, every half second."""
    # stdin stays open a second: busybox nc hangs up at its EOF, before aiohttp answers
    return ("while true; do { printf 'GET /_standin/stats HTTP/1.0\\r\\n\\r\\n'; sleep 1; } "
            f"| nc -w 2 127.0.0.1 {engine_port} | grep -q '^HTTP/1' && echo engine reached "
            "|| echo engine refused; "
            f"nc -w 2 127.0.0.1 {other_port} </dev/null >/dev/null 2>&1 && echo other reached "
            "|| echo other refused; sleep 0.5; done")


@pytest.fixture
def service() -> Iterator[int]:
    with tcp_service() as port:
        yield port


def program(pid: str) -> str:
    """The name a process was started as (pasta re-execs itself as passt.avx2: its comm)."""
    return Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()).name


def write_config(home: Path, entries: list[str]) -> None:
    (home / "config.yaml").write_text("workers:\n" + "".join(entries))


def logs(daemon: object, name: str) -> str:
    return str(daemon.iii("worker", "logs", name).stdout)  # type: ignore[attr-defined]


def test_the_default_reaches_the_engine_only_and_an_entry_opens_a_port(
        daemon_factory, engine_factory, busybox_image: str, iii_home: Path, tmp_path: Path,
        service: int) -> None:
    engine = engine_factory()
    port = int(engine.url.rsplit(":", 1)[1])
    closed = make_shell_project(tmp_path, busybox_image, "closed",
                                start=probe_script(port, service))
    opened = make_shell_project(tmp_path, busybox_image, "opened",
                                start=probe_script(port, service))
    write_config(iii_home, [f"  - name: closed\n    worker_path: {closed}\n",
                            (f"  - name: opened\n    worker_path: {opened}\n"
                            f"    network:\n      allow: [127.0.0.1:{service}]\n")])
    daemon = daemon_factory(III_URL=engine.url)  # the engine is up: both workers start
    wait_until(lambda: "engine reached\nother " in logs(daemon, "closed")
               and "engine reached\nother " in logs(daemon, "opened"), 15, "the probes")
    assert "engine reached\nother refused" in logs(daemon, "closed")
    assert "other reached" not in logs(daemon, "closed")
    assert "engine reached\nother reached" in logs(daemon, "opened")
    shown = daemon.json("worker", "inspect", "opened")["isolation_detail"]["network"]
    assert "policy egress (" in shown and f"engine port {port}" in shown
    assert f"allow 127.0.0.1:{service}" in shown
    host = daemon.json("daemon", "status")["isolation"]["host"]["network"]
    assert "default policy egress" in host


def test_policy_none_runs_no_helper(daemon_factory, engine_factory, busybox_image: str,
                                    iii_home: Path, tmp_path: Path, service: int) -> None:
    engine = engine_factory()
    port = int(engine.url.rsplit(":", 1)[1])
    project = make_shell_project(tmp_path, busybox_image, "alone",
                                 start=probe_script(port, service))
    write_config(iii_home, [f"  - name: alone\n    worker_path: {project}\n    network: none\n"])
    daemon = daemon_factory(III_URL=engine.url)  # the engine is up: the worker starts
    wait_until(lambda: "other " in logs(daemon, "alone"), 15, "the probes")
    started = daemon.worker("alone")
    assert "engine refused\nother refused" in logs(daemon, "alone")
    children = Path(f"/proc/{started['pid']}/task/{started['pid']}/children").read_text()
    programs = [program(pid) for pid in children.split()]
    assert "pasta" not in programs and "slirp4netns" not in programs, programs
    detail = daemon.json("worker", "inspect", "alone")["isolation_detail"]
    assert detail["network"].startswith("own network namespace (loopback only); policy none")


HELPERS = {"pasta": find_pasta(), "slirp4netns": find_slirp4netns()}


@pytest.mark.parametrize("helper", sorted(HELPERS))
def test_a_killed_helper_is_logged_and_the_worker_is_back_on_the_engine(
        daemon_factory, engine_factory, busybox_image: str, iii_home: Path, tmp_path: Path,
        service: int, helper: str) -> None:
    if HELPERS[helper] is None:
        pytest.skip(f"{helper} is not installed")
    engine = engine_factory()
    port = int(engine.url.rsplit(":", 1)[1])
    project = make_shell_project(tmp_path, busybox_image, "cut",
                                 start=probe_script(port, service))
    hide = {} if helper == "pasta" else {"III_PASTA": str(tmp_path / "no-pasta")}
    daemon = daemon_factory(III_URL=engine.url, **hide)
    assert daemon.iii("worker", "add", str(project)).returncode == 0
    wait_until(lambda: "engine reached" in logs(daemon, "cut"), 15, "the engine reached")
    launcher = daemon.worker("cut")["pid"]
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    ours = [pid for pid in children if program(pid) == helper]
    assert len(ours) == 1, [program(pid) for pid in children]
    os.kill(int(ours[0]), signal.SIGKILL)
    wait_until(lambda: daemon.worker("cut")["restarts"] == 1
               and daemon.worker("cut")["status"] == "running", 15.0, "the restart")
    why = f"network helper {helper} ended: killed by signal 9"
    assert f"[iii-launcher] {why}; ending the sandbox" in logs(daemon, "cut")
    worker = daemon.worker("cut")
    assert worker["pid"] != launcher and worker["last_exit_code"] == 128 + signal.SIGKILL
    assert why in (worker.get("last_error") or ""), worker
    before = logs(daemon, "cut").count("engine reached")
    wait_until(lambda: logs(daemon, "cut").count("engine reached") > before, 15,
               "the restarted worker back on the engine")
    assert launchers_of(iii_home, "cut") == [worker["pid"]]
    record = json.loads((iii_home / "managed/cut/launcher.pid").read_text())
    assert record["pid"] == worker["pid"]
