"""The libkrun backend's sandbox process: configure libkrun, then ``krun_start_enter``.

Runs in the launcher's forked child (already inside the launcher's user + mount namespace,
with the root mounted at ``merged``). libkrun takes the process over and exits it when the VM
stops, so the launcher above it is what records ``exit.json``.
"""

from __future__ import annotations

import os
import signal
import sys

from vmm_ffi import syscalls as sc
from vmm_ffi.errors import LauncherError
from vmm_ffi.isolation.sandbox_init import FORWARDED_SIGNALS, guard_parent_death, send
from vmm_ffi.isolation.seccomp import set_no_new_privs
from vmm_ffi.libkrun.binding import Libkrun, configure, start_enter
from vmm_ffi.params import EXIT_SETUP_FAILED, LaunchParams


def run_vmm(params: LaunchParams, root: str, status_fd: int, alive_r: int, go_r: int,
            log_fd: int) -> None:
    """Body of the VMM process (``root``: the directory the VM boots from). Never returns."""
    try:
        guard_parent_death(alive_r)
        if os.read(go_r, 1) != b"1":
            os._exit(EXIT_SETUP_FAILED)
        sc.set_process_name("iii-vmm")
        # Default dispositions (a signal kills the VMM, as for libkrun itself), then deliver
        # whatever the launcher forwarded while they were blocked across the fork.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        try:
            if sys.platform.startswith("linux"):
                # Cheap hardening of the host-side VMM process (the guest is a VM, unaffected):
                # nothing it execs can gain privileges. No seccomp filter here: libkrun's own
                # syscalls (KVM ioctls, vhost, TSI) are not ours to list.
                set_no_new_privs()
            krun = Libkrun.load()
            ctx = configure(krun, root=root, workdir=params.workdir, argv=params.argv,
                            env=params.env, cpus=params.cpus, memory_mib=params.memory_mib,
                            console=params.log_path)
        except LauncherError as exc:
            send(status_fd, {"error": str(exc)})
            os._exit(EXIT_SETUP_FAILED)
        send(status_fd, {"ready": True})
        error = start_enter(krun, ctx)
        send(status_fd, {"error": str(error)})
        os.write(2, f"[iii-launcher] {error}\n".encode())
    except BaseException as exc:  # noqa: BLE001 - this process must end by _exit, always
        try:
            os.write(2, f"[iii-launcher] vmm process failed: {exc!r}\n".encode())
        finally:
            os._exit(EXIT_SETUP_FAILED)
    os._exit(EXIT_SETUP_FAILED)
