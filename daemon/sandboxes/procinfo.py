"""Identifying a launcher process across daemon restarts: the pid file and ``/proc`` checks.

PIDs get reused, so a pid alone proves nothing. ``launcher.pid`` records the pid *and* the
process start time (``/proc/<pid>/stat`` field 22, in clock ticks since boot); a process is our
launcher only when both match and its cmdline is ``... -m vmm_ffi.launcher <bootstrap.json>``
for this very sandbox.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from vmm_ffi.params import LaunchResult
from vmm_ffi.statefiles import write_atomic

LAUNCHER_MODULE = "vmm_ffi.launcher"


class PidRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What ``launcher.pid`` holds."""

    pid: int
    start_time: int  # /proc/<pid>/stat field 22
    sandbox_pid: int | None = None
    backend: str | None = None
    launch: LaunchResult | None = None  # what the sandbox got; shown by inspect after restarts


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may contain spaces and parens: split after the last ')'.
    return raw[raw.rindex(")") + 2:].split()


def process_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in ticks), or None when gone."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[22 - 3])


def process_state(pid: int) -> str | None:
    """The state letter (R, S, Z, ...) or None when the pid does not exist."""
    fields = _stat_fields(pid)
    return None if fields is None else fields[0]


def parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[4 - 3])


def is_alive(pid: int, start_time: int | None = None) -> bool:
    """True when ``pid`` runs (not a zombie) and, if given, started at ``start_time``."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[22 - 3]) == start_time


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [os.fsdecode(a) for a in raw.split(b"\0") if a]


def is_our_launcher(pid: int, bootstrap: Path) -> bool:
    """Is ``pid`` running ``-m vmm_ffi.launcher <bootstrap>`` for exactly this sandbox?"""
    args = cmdline(pid)
    for i, arg in enumerate(args[:-1]):
        if arg == "-m" and args[i + 1] == LAUNCHER_MODULE:
            # realpath: the same home reached through another spelling is still this sandbox
            # (rejecting a live launcher would let a second one start on the same root).
            return os.path.realpath(args[-1]) == os.path.realpath(bootstrap)
    return False


def find_launcher(bootstrap: Path) -> PidRecord | None:
    """Scan ``/proc`` for this sandbox's launcher: the recovery path when the daemon died
    between spawning a launcher and writing ``launcher.pid``. The sandbox init is forked from
    the launcher with the same command line, so the launcher is the one whose parent is not.
    """
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and is_our_launcher(int(entry), bootstrap):
            ppid = parent_pid(int(entry))
            found[int(entry)] = -1 if ppid is None else ppid
    roots = [pid for pid, ppid in found.items() if ppid not in found]
    if len(roots) != 1:
        return None
    start = process_start_time(roots[0])
    if start is None:
        return None
    sandbox = next((pid for pid, ppid in found.items() if ppid == roots[0]), None)
    return PidRecord(pid=roots[0], start_time=start, sandbox_pid=sandbox)


def write_pid_record(path: Path, record: PidRecord) -> None:
    write_atomic(path, msgspec.json.encode(record) + b"\n", 0o644)


def read_pid_record(path: Path) -> PidRecord | None:
    """The pid file's record; None when absent or unreadable (a torn or foreign file)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(data, type=PidRecord)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
