"""The worker lifecycle's seams, end to end (SPEC §9, §10; issue 19): a stop or remove wins over
an add or start whose install runs, racing `iii-worker start`/`stop` all succeed with one
launcher, add with the engine up says started, add --force keeps --no-watch, a bare
`add NAME --force` never orphans a sandbox, stop_timeout_s is the stop default. Real daemon,
real registry, real namespace sandboxes; workers are busybox shell loops."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.daemon import III_CLI, launchers_of
from tests.support.projects import make_shell_project
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow

IIII_WORKER = str(Path(III_CLI).with_name("iii-worker"))
# Slow only when requirements.txt says so: add is quick, a later start's install hangs.
SLOW_WHEN_ASKED = "if grep -q slow requirements.txt; then exec sleep 1000; fi"


def spawn(daemon, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(list(args), env=daemon.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def config_entry(home: Path, name: str) -> str:
    text = (home / "config.yaml").read_text()
    start = text.index(f"name: {name}")
    rest = text[start:]
    end = rest.find("\n  - ", 1)
    return rest if end < 0 else rest[:end]


def test_stop_during_add_install_wins_and_kills_it(daemon_factory, busybox_image, iii_home: Path,
                                                   tmp_path: Path) -> None:
    project = make_shell_project(tmp_path, busybox_image, "slow", start="exec sleep 1000",
                                 install="exec sleep 1000")
    daemon = daemon_factory()
    add = spawn(daemon, III_CLI, "worker", "add", str(project), "--json")
    wait_until(lambda: launchers_of(iii_home, "slow") != [], 60, "the install to run")
    began = time.monotonic()
    stop = daemon.iii("worker", "stop", "slow")
    took = time.monotonic() - began
    assert stop.returncode == 0, stop.stderr
    code, out, err = finish(add)
    assert code == 0, err
    result = json.loads(out)
    assert result["started"] is False and result["worker"]["status"] == "stopped"
    assert any("stopped while being added" in w for w in result["warnings"])
    assert launchers_of(iii_home, "slow") == []  # the install's sandbox is gone
    worker = daemon.worker("slow")
    assert worker["status"] == "stopped" and worker["deps_installed"] is False
    assert took < 10.5, f"stop took {took:.1f}s"  # within the stop timeout (10 s) + 0.5


def test_stop_and_remove_during_start_install(daemon_factory, busybox_image, iii_home: Path,
                                              tmp_path: Path) -> None:
    project = make_shell_project(tmp_path, busybox_image, "w", start="exec sleep 1000",
                                 install=SLOW_WHEN_ASKED)
    daemon = daemon_factory()
    daemon.json("worker", "add", str(project))
    (project / "requirements.txt").write_text("slow\n")  # the next start re-runs install
    start = spawn(daemon, III_CLI, "worker", "start", "w")
    wait_until(lambda: launchers_of(iii_home, "w") != [], 60, "the install to run")
    stop = daemon.iii("worker", "stop", "w", timeout=15)
    assert stop.returncode == 0, stop.stderr
    assert finish(start)[0] == 0  # superseded by the stop: answered, not an error
    assert launchers_of(iii_home, "w") == [] and daemon.worker("w")["status"] == "stopped"

    start = spawn(daemon, III_CLI, "worker", "start", "w")
    wait_until(lambda: launchers_of(iii_home, "w") != [], 60, "the install to run again")
    remove = daemon.iii("worker", "remove", "w", timeout=15)
    assert remove.returncode == 0, remove.stderr
    code, _, err = finish(start)
    assert code != 0 and "removed" in err
    assert launchers_of(iii_home, "w") == []
    assert not (iii_home / "managed" / "w").exists()
    assert "name: w" not in (iii_home / "config.yaml").read_text()


def test_racing_iii_worker_start_and_stop_all_succeed(daemon_factory, busybox_image,
                                                      iii_home: Path, tmp_path: Path) -> None:
    daemon = daemon_factory()
    project = make_shell_project(tmp_path, busybox_image, "loop", start="exec sleep 1000")
    daemon.json("worker", "add", str(project))
    for command, status, launchers in (("start", "running", 1), ("stop", "stopped", 0)):
        procs = [spawn(daemon, IIII_WORKER, command, "loop") for _ in range(3)]
        results = [finish(p) for p in procs]
        assert [r[0] for r in results] == [0, 0, 0], [r[2] for r in results]
        assert daemon.worker("loop")["status"] == status
        assert len(launchers_of(iii_home, "loop")) == launchers


def test_add_with_the_engine_up_on_a_fresh_daemon_says_started(
        daemon_factory, engine_factory, busybox_image, iii_home: Path, tmp_path: Path) -> None:
    engine = engine_factory()
    daemon = daemon_factory(III_URL=engine.url)
    added = daemon.json("worker", "add", str(make_shell_project(
        tmp_path, busybox_image, "loop", start="exec sleep 1000")))
    assert added["started"] is True and added["worker"]["status"] == "running"
    assert len(launchers_of(iii_home, "loop")) == 1


def test_add_force_keeps_and_sets_no_watch(daemon_factory, busybox_image, iii_home: Path,
                                           tmp_path: Path) -> None:
    daemon = daemon_factory()
    quiet = make_shell_project(tmp_path, busybox_image, "quiet", start="exec sleep 1000")
    daemon.json("worker", "add", str(quiet), "--no-watch")
    assert "watch: false" in config_entry(iii_home, "quiet")
    daemon.json("worker", "add", str(quiet), "--force")
    assert "watch: false" in config_entry(iii_home, "quiet")  # kept

    loud = make_shell_project(tmp_path, busybox_image, "loud", start="exec sleep 1000")
    daemon.json("worker", "add", str(loud))
    assert "watch" not in config_entry(iii_home, "loud")
    daemon.json("worker", "add", str(loud), "--force", "--no-watch")
    assert "watch: false" in config_entry(iii_home, "loud")  # set


def test_bare_add_force_over_a_sandboxed_worker_is_refused(daemon_factory, busybox_image,
                                                           iii_home: Path,
                                                           tmp_path: Path) -> None:
    daemon = daemon_factory()
    daemon.json("worker", "add", str(make_shell_project(tmp_path, busybox_image, "loop",
                                                        start="exec sleep 1000")))
    assert daemon.iii("worker", "start", "loop").returncode == 0
    pid = daemon.worker("loop")["pid"]
    refused = daemon.iii("worker", "add", "loop", "--force")
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1 and "--force" in refused.stderr
    assert "path" in refused.stderr and "Traceback" not in refused.stderr
    worker = daemon.worker("loop")  # untouched: still managed, still running
    assert worker["type"] == "local" and worker["pid"] == pid
    assert launchers_of(iii_home, "loop") == [pid]


def test_stop_timeout_s_of_daemon_yaml_is_the_stop_default(daemon_factory, busybox_image,
                                                           iii_home: Path,
                                                           tmp_path: Path) -> None:
    (iii_home / "daemon.yaml").write_text("stop_timeout_s: 1\n")
    daemon = daemon_factory()
    deaf = "trap '' TERM; while :; do sleep 1; done"  # ignores SIGTERM: SIGKILL ends it
    daemon.json("worker", "add", str(make_shell_project(tmp_path, busybox_image, "deaf",
                                                        start=deaf)))
    assert daemon.iii("worker", "start", "deaf").returncode == 0
    began = time.monotonic()
    assert daemon.iii("worker", "stop", "deaf").returncode == 0
    took = time.monotonic() - began
    assert daemon.worker("deaf")["last_exit_code"] == 137
    assert took < 8, f"the stop waited {took:.1f}s: not daemon.yaml's 1 s"


def test_an_invalid_hand_written_name_is_listed_invalid_and_never_started(
        daemon_factory, engine_factory, busybox_image, iii_home: Path, tmp_path: Path) -> None:
    engine = engine_factory()
    bad = make_shell_project(tmp_path, busybox_image, "bad", start="exec sleep 1000")
    good = make_shell_project(tmp_path, busybox_image, "good", start="exec sleep 1000")
    (iii_home / "config.yaml").write_text(
        f'workers:\n  - name: "my worker"\n    worker_path: {bad}\n'
        f"  - name: good\n    worker_path: {good}\n")
    daemon = daemon_factory(III_URL=engine.url)
    wait_until(lambda: daemon.worker("good")["status"] == "running", 60,
               "the valid entry after it to be auto-started")
    listed = daemon.worker("my worker")
    assert listed["status"] == "stopped" and listed["pid"] is None
    assert "invalid name" in listed["last_error"] and "config.yaml" in listed["last_error"]
    assert not (iii_home / "managed" / "my worker").exists()


def test_a_container_images_user_runs_the_worker_and_exec(daemon_factory, registry,
                                                          iii_home: Path) -> None:
    from tests.support.images import TarEntry, busybox_layers, config_blob, layer_blob, push_image

    users = layer_blob([
        TarEntry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"
                                    b"app:x:1000:1001::/home/app:/bin/sh\n"),
        TarEntry("etc/group", data=b"root:x:0:\napp:x:1001:\nstaff:x:50:app\n"),
        TarEntry("srv", kind="dir", mode=0o777)])
    layers = [*busybox_layers(), users]
    config = config_blob(entrypoint=["/bin/sh", "-c"],
                         cmd=["echo \"as $(id -u):$(id -g):$(id -G)\"; exec sleep 1000"],
                         working_dir="/srv", env=["PATH=/bin"], user="app",
                         diff_ids=[b.diff_id for b in layers])
    push_image(registry.access, "iii-test/as-app", "1", layers, config)
    daemon = daemon_factory()
    daemon.json("worker", "add", f"{registry.host}/iii-test/as-app:1")
    assert daemon.iii("worker", "start", "as-app").returncode == 0
    wait_until(lambda: "as 1000:1001:" in daemon.iii("worker", "logs", "as-app").stdout, 20,
               "the worker's id line")
    line = next(ln for ln in daemon.iii("worker", "logs", "as-app").stdout.splitlines()
                if "as 1000:1001:" in ln)
    assert set(line.split(":")[-1].split()) == {"1001", "50"}
    done = daemon.iii("worker", "exec", "as-app", "--no-tty", "--", "id", "-u")
    assert done.returncode == 0 and done.stdout.strip() == "1000", done.stderr


def test_an_add_cut_short_leaves_no_sandbox(daemon_factory, busybox_image, iii_home: Path,
                                            tmp_path: Path) -> None:
    daemon = daemon_factory()
    failing = make_shell_project(tmp_path, busybox_image, "failing", start="exec sleep 1000",
                                 install="exit 3")
    assert daemon.iii("worker", "add", str(failing)).returncode != 0
    assert not (iii_home / "managed" / "failing").exists()  # a failed add leaves nothing

    slow = make_shell_project(tmp_path, busybox_image, "slow", start="exec sleep 1000",
                              install="exec sleep 1000")
    add = spawn(daemon, III_CLI, "worker", "add", str(slow))
    wait_until(lambda: launchers_of(iii_home, "slow") != [], 60, "the install to run")
    daemon.kill9()  # the daemon dies mid-add: its install runs on, no entry was written
    finish(add)
    assert launchers_of(iii_home, "slow") != []
    daemon.start()  # rolls the half-done add back
    assert launchers_of(iii_home, "slow") == []
    assert not (iii_home / "managed" / "slow").exists()
    assert all(w["name"] != "slow" for w in daemon.json("worker", "list")["workers"])


def test_remove_during_add_install_cancels_the_add(daemon_factory, busybox_image,
                                                   iii_home: Path, tmp_path: Path) -> None:
    project = make_shell_project(tmp_path, busybox_image, "slow", start="exec sleep 1000",
                                 install="exec sleep 1000")
    daemon = daemon_factory()
    add = spawn(daemon, III_CLI, "worker", "add", str(project))
    wait_until(lambda: launchers_of(iii_home, "slow") != [], 60, "the install to run")
    removed = daemon.iii("worker", "remove", "slow", timeout=15)
    assert removed.returncode == 0, removed.stderr
    code, _, err = finish(add)
    assert code != 0 and "removed" in err and len(err.strip().splitlines()) == 1, err
    assert launchers_of(iii_home, "slow") == []
    assert not (iii_home / "managed" / "slow").exists()
    config = iii_home / "config.yaml"
    assert not config.exists() or "slow" not in config.read_text()


def test_a_reloaded_auto_started_worker_is_still_stopped_by_the_grace(
        daemon_factory, engine_factory, busybox_image, iii_home: Path, tmp_path: Path) -> None:
    engine = engine_factory()
    (iii_home / "daemon.yaml").write_text("engine_down_grace_s: 1\n")
    daemon = daemon_factory(III_URL=engine.url)
    added = daemon.json("worker", "add", str(make_shell_project(
        tmp_path, busybox_image, "loop", start="exec sleep 1000")))
    assert added["started"] is True
    first = daemon.worker("loop")["pid"]
    assert daemon.iii("worker", "restart", "loop").returncode == 0  # what a hot reload does
    assert daemon.worker("loop")["pid"] not in (None, first)
    engine.stop()
    wait_until(lambda: daemon.worker("loop")["status"] == "stopped", 15, "the grace stop")
    assert launchers_of(iii_home, "loop") == []


def test_a_users_start_holds_across_a_daemon_restart(daemon_factory, busybox_image,
                                                     iii_home: Path, tmp_path: Path) -> None:
    daemon = daemon_factory()  # no engine: nothing starts on its own
    for name in ("kept", "idle"):
        daemon.json("worker", "add", str(make_shell_project(tmp_path, busybox_image, name,
                                                            start="exec sleep 1000")))
    assert daemon.iii("worker", "start", "kept").returncode == 0
    daemon.stop()  # a clean shutdown stops the workers, not what the user wants of them
    assert launchers_of(iii_home, "kept") == []
    daemon.start()
    wait_until(lambda: daemon.worker("kept")["status"] == "running", 30,
               "the user's start to hold")
    assert daemon.worker("idle")["status"] == "stopped"
    assert json.loads((iii_home / "managed" / "kept" / "desired.json").read_text()) == \
        {"want": "running", "why": "user"}


def test_a_re_added_worker_does_not_inherit_an_old_stop(
        daemon_factory, engine_factory, busybox_image, iii_home: Path, tmp_path: Path) -> None:
    engine = engine_factory()
    daemon = daemon_factory(III_URL=engine.url)
    project = make_shell_project(tmp_path, busybox_image, "loop", start="exec sleep 1000")
    assert daemon.json("worker", "add", str(project))["started"] is True
    assert daemon.iii("worker", "stop", "loop").returncode == 0  # the user's stop...
    (iii_home / "config.yaml").write_text("workers: []\n")  # ...then the entry goes by hand
    wait_until(lambda: all(w["name"] != "loop" for w in daemon.json("worker", "list")["workers"]),
               10, "the hand removal")
    again = daemon.json("worker", "add", str(project))  # a new worker: nothing asked of it yet
    assert again["started"] is True and again["worker"]["status"] == "running"
