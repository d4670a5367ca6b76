"""``spawn_launcher``: the handshake from the daemon's side, and how it fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.sandboxes.procinfo import is_our_launcher
from tests.support.wait import wait_until
from tests.vmm_ffi.conftest import Sandboxes
from vmm_ffi.errors import AlreadyRunning, LaunchFailed
from vmm_ffi.launch import read_exit, spawn_launcher, tail_lines
from vmm_ffi.params import BindMount, decode_params, encode


def fake_interpreter(tmp_path: Path, body: str) -> str:
    """A stand-in for ``python`` that ignores its args: tests the handshake's failure paths."""
    script = tmp_path / "not-a-launcher"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_bootstrap_written_and_launcher_detached(sandboxes: Sandboxes) -> None:
    params = sandboxes.params(["sleep", "1000"])
    result = sandboxes.spawn(params)
    bootstrap = sandboxes.state_dir(params) / "bootstrap.json"
    assert decode_params(bootstrap.read_bytes()) == params
    assert oct(bootstrap.stat().st_mode & 0o777) == "0o600"
    assert os.getsid(result.pid) == result.pid  # its own session: survives the daemon
    assert is_our_launcher(result.pid, bootstrap)
    assert not is_our_launcher(result.pid, Path("/other/bootstrap.json"))
    assert not is_our_launcher(os.getpid(), bootstrap)
    assert read_exit(params.exit_path) is None  # still running
    os.kill(result.pid, signal.SIGTERM)
    assert sandboxes.wait(result, params)[1].signal == signal.SIGTERM


def test_launcher_dying_first_raises_with_its_stderr(sandboxes: Sandboxes,
                                                     tmp_path: Path) -> None:
    params = sandboxes.params(["true"])
    python = fake_interpreter(tmp_path, "echo 'boom: no sandbox for you' >&2; exit 3")
    with pytest.raises(LaunchFailed) as info:
        spawn_launcher(params, sandboxes.state_dir(params), python=python)
    assert info.value.exit_code == 3
    assert "exited with code 3 before answering" in str(info.value)
    assert info.value.stderr_tail[-1] == "boom: no sandbox for you"


def test_silent_launcher_times_out_and_is_killed(sandboxes: Sandboxes, tmp_path: Path) -> None:
    params = sandboxes.params(["true"])
    python = fake_interpreter(tmp_path, "echo $$ > " + str(tmp_path / "pid") + "; exec sleep 1000")
    with pytest.raises(LaunchFailed) as info:
        spawn_launcher(params, sandboxes.state_dir(params), python=python, timeout=0.5)
    assert "did not answer within 0.5s" in str(info.value)
    pid = int((tmp_path / "pid").read_text())
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped


def test_garbage_answer_is_rejected(sandboxes: Sandboxes, tmp_path: Path) -> None:
    params = sandboxes.params(["true"])
    python = fake_interpreter(tmp_path, "echo '{\"hello\": 1}'; exec sleep 1000")
    with pytest.raises(LaunchFailed) as info:
        spawn_launcher(params, sandboxes.state_dir(params), python=python)
    assert "invalid LaunchResult" in str(info.value)


def test_tail_lines(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    assert tail_lines(str(log), 3) == ["line 47", "line 48", "line 49"]
    assert tail_lines(str(tmp_path / "missing")) == []


def test_second_start_of_the_same_sandbox_is_refused(sandboxes: Sandboxes) -> None:
    params = sandboxes.params(["sleep", "1000"])
    first = sandboxes.spawn(params)
    with pytest.raises(AlreadyRunning) as info:
        sandboxes.spawn(params)
    assert info.value.exit_code == 75
    assert str(info.value).startswith(
        f"sandbox w1 is already running (launcher pid {first.pid} holds")
    assert read_exit(params.exit_path) is None  # the running sandbox's state is untouched
    assert os.waitpid(first.pid, os.WNOHANG) == (0, 0)
    os.kill(first.pid, signal.SIGTERM)
    sandboxes.wait(first, params)
    again = sandboxes.spawn(params)  # the lock died with the first launcher
    assert read_exit(params.exit_path) is None  # the old exit.json was cleared
    os.kill(again.pid, signal.SIGTERM)
    assert sandboxes.wait(again, params)[1].signal == signal.SIGTERM


def test_launcher_runs_without_site_and_finds_its_packages(sandboxes: Sandboxes) -> None:
    params = sandboxes.params(["sleep", "1000"])
    result = sandboxes.spawn(params)
    with open(f"/proc/{result.pid}/cmdline", "rb") as f:
        args = f.read().split(b"\0")
    assert args[1:4] == [b"-S", b"-m", b"vmm_ffi.launcher"]
    os.kill(result.pid, signal.SIGTERM)
    sandboxes.wait(result, params)


def test_inherited_fds_do_not_reach_the_workload(sandboxes: Sandboxes) -> None:
    r, w = os.pipe()
    leaked = os.dup2(r, 200)  # an inheritable fd, like a socket-activation listener
    try:
        assert os.get_inheritable(leaked)
        params = sandboxes.params(["ls", "/proc/self/fd"])
        result = sandboxes.spawn(params)
        sandboxes.wait(result, params)
    finally:
        for fd in (r, w, leaked):
            os.close(fd)
    fds = [x for x in Path(params.log_path).read_text().split() if x.isdigit()]
    assert "200" not in fds and set(fds) <= {"0", "1", "2", "3"}, fds


def test_sandbox_outlives_its_spawner_and_records_its_exit(sandboxes: Sandboxes,
                                                           tmp_path: Path) -> None:
    # A short-lived "daemon" process spawns the launcher and exits; the sandbox goes on and,
    # when its workload ends, exit.json is there for the next daemon to read.
    gate = tmp_path / "gate"
    gate.mkdir()
    params = sandboxes.params(
        ["sh", "-c", "echo up; while [ ! -e /gate/go ]; do sleep 0.02; done; exit 5"],
        binds=[BindMount(source=str(gate), target="/gate")])
    spawner = (f"import sys; from vmm_ffi.launch import spawn_launcher; "
               f"from vmm_ffi.params import decode_params; "
               f"p = decode_params(sys.stdin.buffer.read()); "
               f"print(spawn_launcher(p, {str(sandboxes.state_dir(params))!r}).pid)")
    done = subprocess.run([sys.executable, "-c", spawner], input=encode(params),
                          capture_output=True, timeout=30, check=True)
    launcher = int(done.stdout)
    sandboxes.pids.append(launcher)
    wait_until(lambda: "up" in Path(params.log_path).read_text(), 10, "workload up")
    assert is_our_launcher(launcher, sandboxes.state_dir(params) / "bootstrap.json")
    assert read_exit(params.exit_path) is None
    (gate / "go").touch()
    recorded = wait_until(lambda: read_exit(params.exit_path), 10, "exit.json")
    assert (recorded.exit_code, recorded.signal) == (5, None)
    wait_until(lambda: not is_our_launcher(launcher, sandboxes.state_dir(params) / "bootstrap.json"),
               10, "launcher gone")
