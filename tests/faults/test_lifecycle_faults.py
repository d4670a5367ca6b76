"""Fault injection against the worker lifecycle (issue 6): kill -9 of the daemon mid-install and
mid-stop, kill -9 of a launcher mid-start, an engine that flaps, a config.yaml broken while
workers run, and graceful shutdown. Each test states what must hold afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.daemon import III_CLI, DaemonProcess, launchers_of
from tests.support.projects import make_shell_project
from tests.support.wait import wait_until


def workload_lines(home: Path, name: str) -> list[str]:
    """What the sandbox's processes printed (the daemon's and launcher's own lines left out)."""
    path = home / "managed" / name / "logs" / "worker.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return [ln for ln in text.splitlines() if not ln.startswith(("[iii]", "[iii-launcher]"))]


@pytest.fixture
def background_cli() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``iii`` commands in the background; any still running are killed at teardown."""
    started: list[subprocess.Popen[str]] = []

    def run(daemon: DaemonProcess, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([III_CLI, *args], env=daemon.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        started.append(proc)
        return proc

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


SLOW_INSTALL = "echo installing; if [ -f slow ]; then sleep 60; fi; echo installed"


def test_daemon_killed_during_install(daemon_factory, busybox_image: str, iii_home: Path,
                                      tmp_path: Path, background_cli) -> None:
    """Afterwards: no orphan install process, no marker, no config entry; a new add works."""
    project = make_shell_project(tmp_path, busybox_image, "inst", start="exec sleep 1000",
                           install=SLOW_INSTALL)
    (project / "slow").write_text("")
    daemon = daemon_factory()
    adding = background_cli(daemon, "worker", "add", str(project))
    wait_until(lambda: "installing" in workload_lines(iii_home, "inst"), 30, "install to run")
    daemon.kill9()
    _, err = adding.communicate(timeout=30)
    assert adding.returncode == 1 and err.startswith("error: "), err
    daemon.start()
    wait_until(lambda: launchers_of(iii_home, "inst") == [], 15, "the orphan install to go")
    assert not (iii_home / "managed/inst/upper/var/.iii-prepared").exists()
    assert "inst" not in (iii_home / "config.yaml").read_text() \
        if (iii_home / "config.yaml").exists() else True
    assert daemon.json("worker", "list")["workers"] == []
    (project / "slow").unlink()
    assert daemon.iii("worker", "add", str(project)).returncode == 0
    assert (iii_home / "managed/inst/upper/var/.iii-prepared").exists()


def test_launcher_killed_during_install(daemon_factory, busybox_image: str, iii_home: Path,
                                        tmp_path: Path, background_cli) -> None:
    """Afterwards: add fails with the install's exit, nothing registered, no marker, no strays."""
    project = make_shell_project(tmp_path, busybox_image, "kl", start="exec sleep 1000",
                           install=SLOW_INSTALL)
    (project / "slow").write_text("")
    daemon = daemon_factory()
    adding = background_cli(daemon, "worker", "add", str(project))
    wait_until(lambda: "installing" in workload_lines(iii_home, "kl"), 30, "install to run")
    (pid,) = launchers_of(iii_home, "kl")
    os.kill(pid, signal.SIGKILL)
    _, err = adding.communicate(timeout=60)
    assert adding.returncode == 1 and "install" in err and "Traceback" not in err, err
    # A root daemon's launcher leaves an exit recorder (its fork) that removes the cgroup leaf
    # once the sandbox's processes are gone: it ends by itself within that wait.
    wait_until(lambda: launchers_of(iii_home, "kl") == [], 15, "no launcher-side process left")
    assert not (iii_home / "managed/kl/upper/var/.iii-prepared").exists()
    assert daemon.json("worker", "list")["workers"] == []


def test_daemon_killed_during_stop(daemon_factory, busybox_image: str, iii_home: Path,
                                   tmp_path: Path, background_cli) -> None:
    """A worker ignoring SIGTERM while the daemon dies mid-stop: the user's stop was persisted
    (desired state, SPEC §9), so the new daemon reattaches the same process (not doubled) and
    carries the stop out; the worker then stays stopped."""
    stubborn = "trap '' TERM; echo up; while true; do sleep 0.1; done"
    project = make_shell_project(tmp_path, busybox_image, "stub", start=stubborn)
    daemon = daemon_factory()
    daemon.json("worker", "add", str(project))
    assert daemon.iii("worker", "start", "stub").returncode == 0
    pid = daemon.worker("stub")["pid"]
    stopping = background_cli(daemon, "worker", "stop", "stub", "--timeout", "60")
    wait_until(lambda: daemon.worker("stub")["status"] == "stopping", 10, "stopping")
    daemon.kill9()
    stopping.communicate(timeout=30)
    assert launchers_of(iii_home, "stub") == [pid]  # the daemon died before the SIGKILL
    daemon.start()
    assert daemon.worker("stub")["status"] in ("running", "stopping")  # reattached, not doubled
    assert len(launchers_of(iii_home, "stub")) <= 1
    wait_until(lambda: daemon.worker("stub")["status"] == "stopped", 30,
               "the persisted stop to be carried out")
    assert launchers_of(iii_home, "stub") == []
    stopped = daemon.json("worker", "stop", "stub", "--timeout", "1")  # idempotent
    assert stopped["status"] == "stopped"


def test_engine_flapping_never_starts_a_worker_twice(daemon_factory, engine_factory,
                                                     busybox_image: str, iii_home: Path,
                                                     tmp_path: Path) -> None:
    """Engine up/down 10 times in about 10 s: each worker has one launcher at every sample,
    keeps its first pid (the grace period is not reached) and is never restarted."""
    engine = engine_factory()
    daemon = daemon_factory(III_URL=engine.url)
    wait_until(lambda: daemon.json("daemon", "status")["engine"]["reachable"], 5, "engine up")
    names = ["f1", "f2"]
    for name in names:
        daemon.json("worker", "add", str(make_shell_project(tmp_path, busybox_image, name,
                                                      start="exec sleep 1000")))
    first = {name: daemon.worker(name)["pid"] for name in names}
    assert all(first.values())
    samples = 0
    for _ in range(10):
        engine.stop()
        time.sleep(0.5)  # the fault itself: the engine stays down for half a second
        engine.start()
        for name in names:
            assert len(launchers_of(iii_home, name)) == 1
            samples += 1
    for name in names:
        worker = daemon.worker(name)
        assert worker["pid"] == first[name] and worker["restarts"] == 0
        assert launchers_of(iii_home, name) == [first[name]]
    assert samples == 20


def test_config_broken_while_running(daemon_factory, busybox_image: str, iii_home: Path,
                                     tmp_path: Path) -> None:
    """Reported, never overwritten, and the workers keep running; fixed → writable again."""
    daemon = daemon_factory()
    daemon.json("worker", "add", str(make_shell_project(tmp_path, busybox_image, "keeper",
                                                  start="exec sleep 1000")))
    assert daemon.iii("worker", "start", "keeper").returncode == 0
    pid = daemon.worker("keeper")["pid"]
    good = (iii_home / "config.yaml").read_text()
    broken = "workers: [\n  this is: not yaml\n"
    (iii_home / "config.yaml").write_text(broken)
    result = daemon.iii("worker", "add", "iii-http")
    assert result.returncode == 1 and "config.yaml" in result.stderr
    assert (iii_home / "config.yaml").read_text() == broken
    wait_until(lambda: "config.yaml" in daemon.log and "cannot" in daemon.log, 10, "a report")
    assert launchers_of(iii_home, "keeper") == [pid]
    (iii_home / "config.yaml").write_text(good)
    wait_until(lambda: daemon.iii("worker", "add", "iii-http").returncode == 0, 10, "recovery")
    assert daemon.worker("keeper")["pid"] == pid


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_shutdown_stops_workers(daemon_factory, busybox_image: str, iii_home: Path,
                                         tmp_path: Path, sig: int) -> None:
    daemon = daemon_factory()
    daemon.json("worker", "add", str(make_shell_project(tmp_path, busybox_image, "g",
                                                  start="exec sleep 1000")))
    assert daemon.iii("worker", "start", "g").returncode == 0
    assert daemon.proc is not None
    daemon.proc.send_signal(sig)
    assert daemon.proc.wait(30) == 0
    assert launchers_of(iii_home, "g") == []
    assert not daemon.socket.exists()


def test_keep_workers_leaves_them_for_the_next_daemon(daemon_factory, busybox_image: str,
                                                      iii_home: Path, tmp_path: Path) -> None:
    daemon = daemon_factory(args=("--keep-workers",))
    daemon.json("worker", "add", str(make_shell_project(tmp_path, busybox_image, "k",
                                                  start="exec sleep 1000")))
    assert daemon.iii("worker", "start", "k").returncode == 0
    pid = daemon.worker("k")["pid"]
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(30) == 0
    assert launchers_of(iii_home, "k") == [pid]
    daemon.args = ()
    daemon.start()
    assert daemon.worker("k")["pid"] == pid and daemon.worker("k")["status"] == "running"


def test_launcher_killed_after_start(daemon_factory, busybox_image: str, iii_home: Path,
                                     tmp_path: Path) -> None:
    """SIGKILL of a running worker's launcher (not its workload): the sandbox dies with it
    (no stray processes), the crash is seen without an exit record, and the worker is
    restarted with backoff as exactly one new launcher."""
    marker = "iii-fault-marker-7d1"
    project = make_shell_project(tmp_path, busybox_image, "lk", start=f"exec sh -c 'sleep 1000; :' {marker}")
    daemon = daemon_factory()
    daemon.json("worker", "add", str(project))
    assert daemon.iii("worker", "start", "lk").returncode == 0
    (launcher,) = launchers_of(iii_home, "lk")

    def workloads() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
        return found

    (first_workload,) = workloads()
    os.kill(launcher, signal.SIGKILL)
    wait_until(lambda: not os.path.exists(f"/proc/{first_workload}"), 10, "the workload to die")
    wait_until(lambda: daemon.worker("lk")["restarts"] == 1
               and daemon.worker("lk")["status"] == "running", 15, "the restart")
    (again,) = launchers_of(iii_home, "lk")
    assert again != launcher and len(workloads()) == 1
