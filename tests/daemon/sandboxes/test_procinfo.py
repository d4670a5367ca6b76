"""Launcher identity: run once with ``/proc`` (Linux) and once with ``ps`` (the macOS path,
which has no ``/proc``; Linux procps takes the same ``ps`` options, so it runs here)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.sandboxes import processes, procinfo
from daemon.sandboxes.procinfo import (
    PidRecord,
    find_launcher,
    is_alive,
    is_our_launcher,
    parent_pid,
    process_start_time,
    read_pid_record,
    write_pid_record,
)
from tests.support.wait import wait_until


@pytest.fixture(params=["proc", "ps"], autouse=True)
def table(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    chosen = processes.ProcFs() if request.param == "proc" else processes.PsTable()
    monkeypatch.setattr(procinfo, "TABLE", chosen)
    return str(request.param)


@pytest.fixture
def lookalike(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A process whose command line is a launcher's for a bootstrap under a path with a space
    (macOS homes live under "Application Support"); the launcher proper needs a sandbox."""
    bootstrap = tmp_path / "Application Support" / "bootstrap.json"
    bootstrap.parent.mkdir()
    bootstrap.write_text("{}")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "-m",
                             "vmm_ffi.launcher", str(bootstrap)])
    # Between fork and exec the child still shows our own command line: wait for its own.
    wait_until(lambda: b"vmm_ffi.launcher" in Path(f"/proc/{proc.pid}/cmdline").read_bytes(),
               10, "the lookalike to exec")
    yield proc, bootstrap
    proc.kill()
    proc.wait()


def test_start_time_and_liveness_of_this_process() -> None:
    me = os.getpid()
    start = process_start_time(me)
    assert start is not None and start > 0
    assert is_alive(me) and is_alive(me, start)
    assert not is_alive(me, start + 1)
    assert parent_pid(me) == os.getppid()


def test_a_python_process_is_not_our_launcher(tmp_path: Path) -> None:
    assert not is_our_launcher(os.getpid(), tmp_path / "bootstrap.json")
    assert not is_our_launcher(2**22 + 7, tmp_path / "bootstrap.json")  # no such pid
    assert not is_alive(2**22 + 7)


def test_a_launcher_is_recognised_and_found_without_its_pid_file(
        lookalike: tuple[subprocess.Popen[bytes], Path], tmp_path: Path) -> None:
    proc, bootstrap = lookalike
    assert is_our_launcher(proc.pid, bootstrap)
    assert not is_our_launcher(proc.pid, tmp_path / "other" / "bootstrap.json")
    found = find_launcher(bootstrap)
    assert found is not None and found.pid == proc.pid
    assert found.start_time == process_start_time(proc.pid)
    assert is_alive(proc.pid, found.start_time)
    proc.kill()
    proc.wait()
    assert not is_alive(proc.pid, found.start_time)
    assert not is_our_launcher(proc.pid, bootstrap)
    assert find_launcher(bootstrap) is None


def test_pid_record_roundtrip_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "launcher.pid"
    assert read_pid_record(path) is None
    rec = PidRecord(pid=123, start_time=456, sandbox_pid=124, backend="namespace")
    write_pid_record(path, rec)
    assert read_pid_record(path) == rec
    path.write_text('{"pid": "x"}')
    assert read_pid_record(path) is None
