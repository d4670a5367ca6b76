"""Identifying a launcher process across daemon restarts: the pid file and process checks.

PIDs get reused, so a pid alone proves nothing. ``launcher.pid`` records the pid *and* the
process start time (from ``daemon.sandboxes.processes``: ``/proc`` on Linux, ``ps`` on macOS);
a process is our launcher only when both match and its command line is ``... -m
vmm_ffi.launcher <bootstrap.json>`` for this very sandbox.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from daemon.sandboxes import processes
from vmm_ffi.params import LaunchResult
from vmm_ffi.statefiles import write_atomic

# Which process table answers: /proc on Linux, ps(1) on macOS (tests swap it to run the
# macOS path here).
TABLE: processes.ProcessTable = processes.current()


class PidRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What ``launcher.pid`` holds."""

    pid: int
    start_time: int  # as the process table gives it (ticks since boot on Linux)
    sandbox_pid: int | None = None
    backend: str | None = None
    launch: LaunchResult | None = None  # what the sandbox got; shown by inspect after restarts


def process_start_time(pid: int) -> int | None:
    """The process's start time (ticks since boot on Linux), or None when gone."""
    facts = TABLE.facts(pid)
    return None if facts is None else facts.start_time


def parent_pid(pid: int) -> int | None:
    facts = TABLE.facts(pid)
    return None if facts is None else facts.ppid


def is_alive(pid: int, start_time: int | None = None) -> bool:
    """True when ``pid`` runs (not a zombie) and, if given, started at ``start_time``."""
    facts = TABLE.facts(pid)
    if facts is None or facts.state in ("Z", "X"):
        return False
    return start_time is None or facts.start_time == start_time


def is_our_launcher(pid: int, bootstrap: Path) -> bool:
    """Is ``pid`` running ``-m vmm_ffi.launcher <bootstrap>`` for exactly this sandbox?"""
    arg = TABLE.launcher_bootstrap(pid)
    # realpath: the same home reached through another spelling is still this sandbox
    # (rejecting a live launcher would let a second one start on the same root).
    return arg is not None and os.path.realpath(arg) == os.path.realpath(bootstrap)


def find_launcher(bootstrap: Path) -> PidRecord | None:
    """Search the process table for this sandbox's launcher: the recovery path when the daemon
    died between spawning a launcher and writing ``launcher.pid``. The sandbox init is forked
    from the launcher with the same command line, so the launcher is the one whose parent is
    not.
    """
    found: dict[int, int] = {}
    for pid in TABLE.pids():
        if is_our_launcher(pid, bootstrap):
            ppid = parent_pid(pid)
            found[pid] = -1 if ppid is None else ppid
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
