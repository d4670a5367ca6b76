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
from vmm_ffi.network.helper import find_pasta, find_slirp4netns, tun_problem

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(tun_problem() is not None, reason="/dev/net/tun is not ours")]


HELPERS = {"pasta": find_pasta(), "slirp4netns": find_slirp4netns()}


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


CONNECTS = ["auto", "pasta", "slirp4netns"]  # auto: the bridge for a root daemon


@pytest.mark.parametrize("connect", CONNECTS)
def test_the_default_reaches_the_engine_only_and_an_entry_opens_a_port(
        daemon_factory, engine_factory, busybox_image: str, iii_home: Path, tmp_path: Path,
        service: int, connect: str) -> None:
    if connect != "auto" and HELPERS[connect] is None:
        pytest.skip(f"{connect} is not installed")
    engine = engine_factory()
    port = int(engine.url.rsplit(":", 1)[1])
    closed = make_shell_project(tmp_path, busybox_image, "closed",
                                start=probe_script(port, service))
    opened = make_shell_project(tmp_path, busybox_image, "opened",
                                start=probe_script(port, service))
    write_config(iii_home, [f"  - name: closed\n    worker_path: {closed}\n",
                            (f"  - name: opened\n    worker_path: {opened}\n"
                            f"    network:\n      allow: [127.0.0.1:{service}]\n")])
    daemon = daemon_factory(III_URL=engine.url, III_NETWORK_BACKEND=connect)  # both start
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
    launch = json.loads((iii_home / "managed/opened/launcher.pid").read_text())["launch"]
    assert launch["network"] == (connect if connect != "auto" else
                                 "bridge" if os.geteuid() == 0 else launch["network"])


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
    daemon = daemon_factory(III_URL=engine.url, III_NETWORK_BACKEND=helper)
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


@pytest.mark.skipif(os.geteuid() != 0, reason="the bridge is a root daemon's")
def test_after_kill9_of_everything_the_restarted_daemon_sweeps_its_bridge(
        daemon_factory, busybox_image: str, iii_home: Path, tmp_path: Path) -> None:
    from vmm_ffi.network import bridge as br

    project = make_shell_project(tmp_path, busybox_image, "gone", start="exec sleep 1000")
    daemon = daemon_factory()
    assert daemon.iii("worker", "add", str(project)).returncode == 0
    assert daemon.iii("worker", "start", "gone").returncode == 0
    bridge, table = br.names(br.tag_of(str(iii_home)))
    assert Path(f"/sys/class/net/{bridge}").is_dir()
    launcher = daemon.worker("gone")["pid"]
    daemon.kill9()
    os.killpg(launcher, signal.SIGKILL)  # the launcher, its exit recorder, the sandbox: no
    wait_until(lambda: not launchers_of(iii_home, "gone"), 10, "the launcher gone")  # release
    assert Path(f"/sys/class/net/{bridge}").is_dir()  # stale until a daemon of this home starts
    daemon.start()
    assert not Path(f"/sys/class/net/{bridge}").exists()
    assert f"table ip {table}" not in br.run(["nft", "list", "tables"])
    assert not [x for x in os.listdir("/sys/class/net") if x.startswith(f"iv{br.tag_of(str(iii_home))}")]
    assert not list((iii_home / "network/leases").iterdir())


@pytest.mark.skipif(os.geteuid() != 0, reason="the bridge is a root daemon's")
def test_a_subnet_overlapping_a_host_route_is_one_line_naming_it(
        daemon_factory, busybox_image: str, iii_home: Path, tmp_path: Path) -> None:
    from vmm_ffi.network import bridge as br

    # a route of the host itself, not of a bridge another test or daemon may remove meanwhile
    route = next(net for net, dev in br.host_routes() if not dev.startswith("iii-"))
    (iii_home / "daemon.yaml").write_text(f"network_subnet: {route}\n")
    project = make_shell_project(tmp_path, busybox_image, "clash", start="exec sleep 1000")
    daemon = daemon_factory()
    added = daemon.iii("worker", "add", str(project))
    assert added.returncode != 0
    error = added.stderr.strip()
    assert len(error.splitlines()) == 1, error
    assert f"daemon.yaml: network_subnet {route} overlaps the host's route {route}" in error
    assert "Traceback" not in added.stderr
