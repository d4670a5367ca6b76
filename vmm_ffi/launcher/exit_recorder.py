"""A host-side helper that records the sandbox's exit when the launcher itself cannot.

A launcher with ``id_shift`` enters the sandbox's user namespace as a subordinate id: from then
on it may not write the daemon's state dir (nor reach it through ``$III_HOME``'s private
parents) or remove its cgroup. So before it unshares it forks this helper, which keeps the
launcher's host identity, waits for the final ``ExitStatus`` on a pipe, writes ``exit.json``
atomically and removes the cgroup leaf. If the launcher dies without sending one (SIGKILL), the
helper sees EOF, removes the leaf and records nothing, exactly as a killed launcher would.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import msgspec

from vmm_ffi import syscalls as sc
from vmm_ffi.params import ExitStatus, encode
from vmm_ffi.statefiles import write_atomic

_MAX_MESSAGE = 1 << 16


class ExitRecorder:
    """The launcher's handle on the helper: ``record(status)`` once, then it is gone."""

    def __init__(self, pid: int, status_w: int) -> None:
        self.pid, self._status_w = pid, status_w

    @classmethod
    def fork(cls, exit_path: str, cleanup: Callable[[], None]) -> ExitRecorder:
        """Fork the helper (call while still on the host's ids)."""
        status_r, status_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - exercised through real launchers
            code = 0
            try:
                os.close(status_w)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                    signal.signal(sig, signal.SIG_IGN)  # the launcher handles these
                sc.set_process_name("iii-recorder")
                data = b""
                while chunk := os.read(status_r, _MAX_MESSAGE):
                    data += chunk
                if data:
                    status = msgspec.json.decode(data, type=ExitStatus)
                    write_atomic(exit_path, encode(status) + b"\n")
            except (OSError, msgspec.DecodeError):
                code = 1
            finally:
                try:
                    cleanup()
                finally:
                    os._exit(code)
        os.close(status_r)
        return cls(pid, status_w)

    def record(self, status: ExitStatus) -> bool:
        """Hand ``status`` to the helper and wait for it; True when it was written."""
        try:
            os.write(self._status_w, encode(status))
        except OSError:
            pass
        finally:
            os.close(self._status_w)
        _, wait_status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(wait_status) == 0
