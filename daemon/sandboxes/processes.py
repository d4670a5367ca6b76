"""Facts about host processes, per platform: Linux reads ``/proc``, macOS (no ``/proc``) asks
``ps(1)``.

Only what identifying a launcher needs: state, parent, a start time that tells a reused pid
from the original, the ``vmm_ffi.launcher`` argument (the sandbox's bootstrap.json) and the
list of pids. Start times are compared only with ones the same table produced (clock ticks
since boot from ``/proc``, seconds since the epoch from ``ps``), so the units never mix.
"""

from __future__ import annotations

import calendar
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vmm_ffi.launch import LAUNCHER_MODULE

PS_TIMEOUT_S = 10.0
_LAUNCHER_FLAG = f" -m {LAUNCHER_MODULE} "


@dataclass(frozen=True, slots=True)
class ProcFacts:
    state: str  # first letter of the state: R, S, Z (zombie), ...
    ppid: int
    start_time: int


class ProcessTable(Protocol):
    def facts(self, pid: int) -> ProcFacts | None: ...

    def launcher_bootstrap(self, pid: int) -> str | None:
        """The argument after ``-m vmm_ffi.launcher`` (None: not a launcher, or gone)."""
        ...

    def pids(self) -> list[int]: ...


class ProcFs:
    """Linux: ``/proc/<pid>/stat`` and ``/proc/<pid>/cmdline``."""

    def facts(self, pid: int) -> ProcFacts | None:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read().decode("ascii", "replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        # comm (field 2) may contain spaces and parens: split after the last ')'.
        fields = raw[raw.rindex(")") + 2:].split()
        return ProcFacts(state=fields[0], ppid=int(fields[4 - 3]),
                         start_time=int(fields[22 - 3]))

    def launcher_bootstrap(self, pid: int) -> str | None:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = [os.fsdecode(a) for a in f.read().split(b"\0") if a]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        for i, arg in enumerate(args[:-1]):
            if arg == "-m" and args[i + 1] == LAUNCHER_MODULE and i + 2 < len(args):
                return args[-1]
        return None

    def pids(self) -> list[int]:
        return [int(e) for e in os.listdir("/proc") if e.isdigit()]


class PsTable:
    """macOS and the BSDs: ``ps -o`` (the same options work with Linux procps, which is how
    this path is tested here). ``command`` is argv joined by spaces, so the bootstrap path is
    taken as everything after ``-m vmm_ffi.launcher``: a home with spaces still matches."""

    def _ps(self, *args: str) -> list[str]:
        try:
            done = subprocess.run(["ps", *args], capture_output=True, text=True,
                                  timeout=PS_TIMEOUT_S, check=False,
                                  env={**os.environ, "LC_ALL": "C"})
        except (OSError, subprocess.TimeoutExpired):
            return []
        return done.stdout.splitlines() if done.returncode == 0 else []

    def facts(self, pid: int) -> ProcFacts | None:
        lines = self._ps("-o", "ppid=,stat=,lstart=", "-p", str(pid))
        if not lines:
            return None
        parts = lines[0].split()
        try:  # lstart: "Sun Nov 29 01:37:44 2026" (C locale, local time)
            started = time.strptime(" ".join(parts[2:7]), "%a %b %d %H:%M:%S %Y")
            return ProcFacts(state=parts[1][:1], ppid=int(parts[0]),
                             start_time=calendar.timegm(started))
        except (ValueError, IndexError):
            return None

    def launcher_bootstrap(self, pid: int) -> str | None:
        lines = self._ps("-ww", "-o", "command=", "-p", str(pid))
        if not lines or _LAUNCHER_FLAG not in lines[0]:
            return None
        return lines[0].split(_LAUNCHER_FLAG, 1)[1].strip() or None

    def pids(self) -> list[int]:
        return [int(line) for line in self._ps("-ax", "-o", "pid=")
                if line.strip().isdigit()]


def current() -> ProcessTable:
    """``/proc`` where it exists (Linux), ``ps`` elsewhere (macOS)."""
    return ProcFs() if Path("/proc/self/stat").exists() else PsTable()
