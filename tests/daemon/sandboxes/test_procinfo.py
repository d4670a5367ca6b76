from __future__ import annotations

import os
from pathlib import Path

from daemon.sandboxes.procinfo import (
    PidRecord,
    is_alive,
    is_our_launcher,
    process_start_time,
    read_pid_record,
    write_pid_record,
)


def test_start_time_and_liveness_of_this_process() -> None:
    me = os.getpid()
    start = process_start_time(me)
    assert start is not None and start > 0
    assert is_alive(me) and is_alive(me, start)
    assert not is_alive(me, start + 1)


def test_a_python_process_is_not_our_launcher(tmp_path: Path) -> None:
    assert not is_our_launcher(os.getpid(), tmp_path / "bootstrap.json")
    assert not is_our_launcher(2**22 + 7, tmp_path / "bootstrap.json")  # no such pid


def test_pid_record_roundtrip_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "launcher.pid"
    assert read_pid_record(path) is None
    rec = PidRecord(pid=123, start_time=456, sandbox_pid=124, backend="namespace")
    write_pid_record(path, rec)
    assert read_pid_record(path) == rec
    path.write_text('{"pid": "x"}')
    assert read_pid_record(path) is None
