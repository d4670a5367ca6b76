"""How a sandbox's end becomes its ``ExitStatus``: the messages its process reports on the
status pipe, the wait status with the 128+N convention for signals, extra causes put in front
of its error, and ``exit.json`` written atomically.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import IO

import msgspec

from vmm_ffi.params import ExitStatus, encode
from vmm_ffi.statefiles import write_atomic


def read_message(stream: IO[bytes]) -> dict[str, object]:
    """The next JSON object the sandbox process reported ({} at EOF or on garbage)."""
    line = stream.readline()
    if not line:
        return {}
    try:
        value = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def exit_status(child_status: int, last: dict[str, object]) -> ExitStatus:
    """The workload's status (the init reports it in ``last``), else the child's own."""
    now = time.time()
    raw = last.get("status")
    status = raw if isinstance(raw, int) else child_status
    error = last.get("error") or last.get("exec_error")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return ExitStatus(exit_code=128 + sig, signal=sig, finished_at=now,
                          error=str(error) if error else None)
    return ExitStatus(exit_code=os.WEXITSTATUS(status), finished_at=now,
                      error=str(error) if error else None)


def with_cause(status: ExitStatus, cause: str | None) -> ExitStatus:
    """``cause`` (a helper that ended, the OOM killer) put before the status's own error."""
    if cause is None:
        return status
    return msgspec.structs.replace(
        status, error=cause if not status.error else f"{cause}; {status.error}")


def write_exit(path: str, status: ExitStatus, log: Callable[[str], None]) -> None:
    """``exit.json`` as the launcher itself writes it; a failure is logged, not raised."""
    try:
        write_atomic(path, encode(status) + b"\n")
    except OSError as exc:  # a full disk: the daemon still has our exit code
        try:
            log(f"cannot record the exit status in {path}: {exc}")
        except OSError:
            pass
