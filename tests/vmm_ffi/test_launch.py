"""``spawn_launcher``: the handshake from the daemon's side, and how it fails."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.vmm_ffi.conftest import Sandboxes
from vmm_ffi.errors import AlreadyRunning, LaunchFailed
from vmm_ffi.launch import is_launcher, read_exit, spawn_launcher, tail_lines
from vmm_ffi.params import decode_params


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
    assert is_launcher(result.pid, bootstrap)
    assert not is_launcher(result.pid, "/other/bootstrap.json")
    assert not is_launcher(os.getpid(), bootstrap)
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
