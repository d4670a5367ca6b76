"""Who lives in a pid namespace, read from ``/proc`` (processes come and go while we look)."""

from __future__ import annotations

import os


def processes_in_pid_ns(ns: str) -> list[int]:
    """Pids of every process whose pid namespace is ``ns`` (``readlink /proc/PID/ns/pid``)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == ns:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def tasks_in_pid_ns(ns: str) -> int:
    """Tasks (threads included) of every process in the pid namespace ``ns``."""
    count = 0
    for pid in processes_in_pid_ns(ns):
        try:
            count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count
