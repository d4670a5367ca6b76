"""Hot reload of local workers end to end (SPEC §10): real files, a real watcher, real restarts.
Here on shell workers; each SDK kind (TypeScript, JavaScript, Bun, Python) reloads an edit to
its answering version in ``test_init.py``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess
from tests.support.projects import make_shell_project
from tests.support.wait import wait_until

START = "echo version=$(cat msg.txt); exec sleep 1000"


def logs(daemon: DaemonProcess, name: str) -> str:
    return daemon.iii("worker", "logs", name, "--tail", "500").stdout


@pytest.fixture
def watched(daemon_factory, busybox_image: str, tmp_path: Path) -> tuple[DaemonProcess, Path]:
    project = make_shell_project(tmp_path, busybox_image, "live", start=START,
                                 install="echo installing deps")
    (project / "msg.txt").write_text("one\n")
    daemon = daemon_factory()
    assert daemon.iii("worker", "add", str(project)).returncode == 0
    assert daemon.json("worker", "start", "live")["status"] == "running"
    wait_until(lambda: "version=one" in logs(daemon, "live"), 15, "the first version")
    return daemon, project


def test_an_edit_reloads_the_new_version(watched: tuple[DaemonProcess, Path]) -> None:
    daemon, project = watched
    (project / "msg.txt").write_text("two\n")
    wait_until(lambda: "version=two" in logs(daemon, "live"), 20, "the reloaded version")
    text = logs(daemon, "live")
    assert "[iii] reloading (msg.txt changed)" in text
    assert text.count("[iii] running install") == 1  # a source edit does not re-run install
    assert daemon.worker("live")["status"] == "running"


def test_a_save_storm_is_one_reload(watched: tuple[DaemonProcess, Path]) -> None:
    daemon, project = watched
    for i in range(100):
        (project / "msg.txt").write_text(f"storm-{i}\n")
    wait_until(lambda: "version=storm-99" in logs(daemon, "live"), 20, "the last version")
    assert logs(daemon, "live").count("[iii] reloading") == 1


def test_a_dependency_edit_runs_install_first(watched: tuple[DaemonProcess, Path]) -> None:
    daemon, project = watched
    (project / "requirements.txt").write_text("something-new\n")
    wait_until(lambda: logs(daemon, "live").count("[iii] running install") == 2, 20,
               "install to run again")
    assert "reloading (requirements.txt changed)" in logs(daemon, "live")


def test_editor_droppings_and_skipped_dirs_do_not_reload(
        watched: tuple[DaemonProcess, Path]) -> None:
    daemon, project = watched
    (project / ".msg.txt.swp").write_text("x")
    (project / "node_modules").mkdir()
    (project / "node_modules" / "dep.js").write_text("x")
    (project / "msg.txt").write_text("three\n")  # then a real edit: exactly one reload, of it
    wait_until(lambda: "version=three" in logs(daemon, "live"), 20, "the reloaded version")
    text = logs(daemon, "live")
    assert text.count("[iii] reloading") == 1 and "reloading (msg.txt changed)" in text


def test_a_deleted_project_is_reported_and_the_worker_keeps_running(
        watched: tuple[DaemonProcess, Path]) -> None:
    daemon, project = watched
    shutil.rmtree(project)
    wait_until(lambda: "is gone" in logs(daemon, "live"), 20, "the watcher to report it")
    assert daemon.worker("live")["status"] == "running"
    daemon.json("worker", "stop", "live")
    again = daemon.iii("worker", "start", "live")
    assert again.returncode == 1 and str(project) in again.stderr, again.stderr


def test_no_watch_turns_it_off(daemon_factory, busybox_image: str, iii_home: Path,
                               tmp_path: Path) -> None:
    project = make_shell_project(tmp_path, busybox_image, "still", start=START)
    (project / "msg.txt").write_text("one\n")
    daemon = daemon_factory()
    assert daemon.iii("worker", "add", "--no-watch", str(project)).returncode == 0
    assert "watch: false" in (iii_home / "config.yaml").read_text()
    assert daemon.json("worker", "start", "still")["status"] == "running"
    wait_until(lambda: "version=one" in logs(daemon, "still"), 15, "the first version")
    (project / "msg.txt").write_text("two\n")
    with pytest.raises(TimeoutError):  # a bounded wait for something that must not happen
        wait_until(lambda: "reloading" in logs(daemon, "still"), 3, "no reload")


def test_a_broken_edit_backs_off_with_its_error_and_the_next_save_fixes_it(
        daemon_factory, busybox_image: str, tmp_path: Path) -> None:
    project = make_shell_project(tmp_path, busybox_image, "fragile", start="sh run.sh")
    (project / "run.sh").write_text("echo good-1; exec sleep 1000\n")
    daemon = daemon_factory()
    assert daemon.iii("worker", "add", str(project)).returncode == 0
    assert daemon.json("worker", "start", "fragile")["status"] == "running"
    wait_until(lambda: "good-1" in logs(daemon, "fragile"), 15, "the first version")
    (project / "run.sh").write_text("echo broken; if then fi\n")  # a syntax error
    wait_until(lambda: daemon.worker("fragile")["status"] in ("backoff", "crashed"), 20,
               "the broken version to fail")
    status = daemon.iii("worker", "status", "fragile", "--no-watch").stdout
    assert "phase:      backoff" in status and "syntax error" in status
    (project / "run.sh").write_text("echo good-2; exec sleep 1000\n")
    wait_until(lambda: "good-2" in logs(daemon, "fragile"), 20, "the fixed version")
    wait_until(lambda: daemon.worker("fragile")["status"] == "running", 10, "running again")
