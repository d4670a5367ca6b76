"""Which isolation backend can run here, and what to do when one cannot.

``check_libkrun()`` loads the library and (Linux) opens ``/dev/kvm`` read-write, (macOS)
requires arm64. ``check_namespace()`` really tries: a forked child unshares a user + mount
namespace and mounts a tmpfs and an overlay. Results are cached per process (per probe
inputs). ``select_backend`` applies the ``auto | libkrun | namespace`` setting.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from typing import Literal

import msgspec

from vmm_ffi.errors import BackendUnavailable, LauncherError, LibraryNotFound

Setting = Literal["auto", "libkrun", "namespace"]
KVM_DEVICE = "/dev/kvm"


class BackendStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Whether a backend can run; ``reason`` says why not, ``hint`` how to fix it."""

    available: bool
    reason: str | None = None
    hint: str | None = None


_cache: dict[tuple[object, ...], BackendStatus] = {}


def check_libkrun(*, system: str | None = None, machine: str | None = None,
                  kvm_device: str = KVM_DEVICE) -> BackendStatus:
    """Can libkrun run here? (inputs are injectable so tests can play macOS/Intel)."""
    system = system or sys.platform
    machine = machine or platform.machine()
    key = ("libkrun", system, machine, kvm_device, os.environ.get("III_LIBKRUN_PATH"))
    if key not in _cache:
        _cache[key] = _probe_libkrun(system, machine, kvm_device)
    return _cache[key]


def _probe_libkrun(system: str, machine: str, kvm_device: str) -> BackendStatus:
    if system == "darwin" and machine not in ("arm64", "aarch64"):
        return BackendStatus(available=False, reason="Intel Macs are not supported",
                             hint="libkrun needs Apple silicon (Hypervisor.framework on arm64); "
                                  "use an arm64 Mac")
    if not (system.startswith("linux") or system == "darwin"):
        return BackendStatus(available=False, reason=f"libkrun does not run on {system}")
    from vmm_ffi.libkrun.binding import Libkrun
    try:
        Libkrun.load()
    except LibraryNotFound as exc:
        return BackendStatus(available=False, reason=exc.reason, hint=exc.hint)
    if system == "darwin":
        return BackendStatus(available=True)
    if not os.path.exists(kvm_device):
        return BackendStatus(
            available=False, reason=f"{kvm_device} does not exist",
            hint="load KVM: `sudo modprobe kvm_intel` (Intel) or `sudo modprobe kvm_amd` (AMD), "
                 "and enable virtualization in the firmware; in a VM, enable nested "
                 "virtualization")
    try:
        fd = os.open(kvm_device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return BackendStatus(
            available=False, reason=f"{kvm_device} cannot be opened read-write: {exc.strerror}",
            hint="add your user to the kvm group: `sudo usermod -aG kvm $USER`, then log in "
                 "again")
    os.close(fd)
    return BackendStatus(available=True)


def check_namespace() -> BackendStatus:
    """Can the namespace backend run here? Probed once per process in a forked child."""
    key = ("namespace", os.geteuid())
    if key not in _cache:
        _cache[key] = _probe_namespace()
    return _cache[key]


def _probe_namespace() -> BackendStatus:
    if not sys.platform.startswith("linux"):
        return BackendStatus(available=False, reason="the namespace backend needs Linux")
    from vmm_ffi import syscalls as sc
    from vmm_ffi.isolation import userns
    with tempfile.TemporaryDirectory(prefix="iii-probe-") as tmp:
        for d in ("lower", "upper", "work", "merged"):
            os.mkdir(os.path.join(tmp, d))
        r, w = os.pipe()
        sc.load()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            message = b"ok"
            try:
                userns.unshare_with_id_map(sc.CLONE_NEWUSER | sc.CLONE_NEWNS)
                sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
                sc.mount("tmpfs", os.path.join(tmp, "merged"), "tmpfs", 0, "size=64k")
                sc.umount2(os.path.join(tmp, "merged"))
                opts = (f"lowerdir={tmp}/lower,upperdir={tmp}/upper,workdir={tmp}/work")
                sc.mount("overlay", os.path.join(tmp, "merged"), "overlay", 0, opts)
            except (OSError, LauncherError) as exc:  # the probe's answer, reported below
                message = str(exc).encode()
            finally:
                os.write(w, message)
                os._exit(0)
        os.close(w)
        answer = os.read(r, 4096).decode(errors="replace")
        os.close(r)
        os.waitpid(pid, 0)
    if answer == "ok":
        return BackendStatus(available=True)
    return BackendStatus(
        available=False, reason=f"user namespaces with overlayfs do not work here: {answer}",
        hint="enable unprivileged user namespaces (`sysctl kernel.unprivileged_userns_clone=1`, "
             "`sysctl user.max_user_namespaces=15000`; on Ubuntu 24.04+ also "
             "`sysctl kernel.apparmor_restrict_unprivileged_userns=0`) and use Linux >= 5.11")


def select_backend(setting: Setting) -> tuple[str, str | None]:
    """``(backend, reason libkrun is not used or None)``; raises ``BackendUnavailable``."""
    if setting == "namespace":
        status = check_namespace()
        if not status.available:
            raise BackendUnavailable(status.reason or "namespace backend unavailable",
                                     status.hint)
        return "namespace", "isolation set to namespace"
    krun = check_libkrun()
    if krun.available:
        return "libkrun", None
    if setting == "libkrun":
        raise BackendUnavailable(krun.reason or "libkrun unavailable", krun.hint)
    status = check_namespace()
    if not status.available:
        raise BackendUnavailable(
            f"no isolation backend works here: libkrun: {krun.reason}; namespace: "
            f"{status.reason}", status.hint)
    return "namespace", (f"libkrun unavailable: {krun.reason}; using the namespace backend "
                         "(no hardware isolation)")
