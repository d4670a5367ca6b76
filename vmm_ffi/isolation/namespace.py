"""The namespace backend: user + mount (+ pid, uts, ipc) namespaces, the root, /proc, /dev, /tmp.

Process model (see ``vmm_ffi.launcher``):

    launcher (host pid, writes exit.json)          -- enter_namespaces(): user+mount ns, root at
      └── sandbox init (PID 1 in its pid ns)           `merged`, binds; a pid ns for children
            └── workload (exec of argv)             -- init: own mount ns, /proc, /dev, /tmp,
                                                       hostname, pivot_root, then fork+exec

The launcher keeps the host's view of the filesystem (it must write exit.json); only the init's
private mount namespace is pivoted. Mounts made here never reach the host: the launcher's mount
namespace is private (MS_REC|MS_PRIVATE) and owned by its user namespace.
"""

from __future__ import annotations

import os
import resource
import stat
from typing import Literal

from vmm_ffi import syscalls as sc
from vmm_ffi.errors import SetupFailed
from vmm_ffi.isolation.overlay import mount_overlay
from vmm_ffi.params import BindMount, DirectoryRoot, LaunchParams, OverlayRoot

NAMESPACE_FLAGS = sc.CLONE_NEWUSER | sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWUTS \
    | sc.CLONE_NEWIPC
NOFILE_LIMIT = 65536
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


def make_mounts_private() -> None:
    """Nothing we mount from here on propagates to the mount namespace we came from."""
    try:
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    except OSError as exc:
        raise SetupFailed("make mounts private", str(exc)) from exc


def mount_root(params: LaunchParams,
               root: OverlayRoot | DirectoryRoot | None = None) -> Literal["overlay", "directory"]:
    """Mount the sandbox root (``root``, default ``params.rootfs``) at ``params.merged``, in
    our private mount ns; returns the mode."""
    make_mounts_private()
    root = params.rootfs if root is None else root
    try:
        if isinstance(root, OverlayRoot):
            mount_overlay(root, params.merged)
            mode: Literal["overlay", "directory"] = "overlay"
        else:
            assert isinstance(root, DirectoryRoot)
            sc.mount(root.path, params.merged, None, sc.MS_BIND | sc.MS_REC)
            mode = "directory"
    except OSError as exc:
        raise SetupFailed("mount root", str(exc)) from exc
    for bind in params.binds:
        apply_bind(params.merged, bind)
    return mode


def mountpoint(root: str, path: str, *, directory: bool = True,
               replace_link: bool = False) -> str:
    """Host path of in-sandbox ``path``, created component by component, never via a symlink.

    Mounts are set up before pivot_root, while "/" is still the host's: a symlink planted in
    the image (``/etc -> /``) would otherwise point a mount or a created file at the host.
    Intermediate symlinks are refused; a symlink at the mount point itself is replaced by a
    real directory when ``replace_link`` (our own /proc, /dev, /tmp), refused otherwise.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts or not parts:
        raise SetupFailed("path", f"{path!r} must be absolute, without '..', and not /")
    current = root
    for i, part in enumerate(parts):
        current = os.path.join(current, part)
        last = i == len(parts) - 1
        if os.path.islink(current):
            if not (last and replace_link):
                raise SetupFailed(f"mount point {path}", f"{'/' + '/'.join(parts[:i + 1])} is "
                                  "a symlink in the image; refusing to follow it")
            os.unlink(current)
        if not os.path.lexists(current):
            if last and not directory:
                os.close(os.open(current, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o644))
            else:
                os.mkdir(current, 0o755)
    return current


def apply_bind(root: str, bind: BindMount) -> None:
    """Bind ``bind.source`` at ``bind.target`` inside ``root`` (read-only unless asked)."""
    try:
        target = mountpoint(root, bind.target, directory=os.path.isdir(bind.source))
        sc.mount(bind.source, target, None, sc.MS_BIND | sc.MS_REC)
        if bind.readonly:
            sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC)
    except OSError as exc:
        raise SetupFailed(f"bind {bind.source} -> {bind.target}", str(exc)) from exc


# Kernel knobs, as runc/crun make them read-only: the sandbox's root maps to a host id and
# sysctl writes are checked against the file owner only; the seccomp filter then forbids the
# mount calls that could undo these binds.
READONLY_PROC_PATHS = ("sys", "sysrq-trigger", "irq", "bus")


def _readonly_proc_paths(proc: str) -> None:
    for name in READONLY_PROC_PATHS:
        path = os.path.join(proc, name)
        if not os.path.exists(path):
            continue
        sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
        sc.mount(None, path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_REC
                 | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)


def _mount_dev(root: str) -> None:
    dev = mountpoint(root, "/dev", replace_link=True)
    sc.mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC, "mode=755,size=65536k")
    for node in DEV_NODES:
        host = f"/dev/{node}"
        if not os.path.exists(host):
            continue
        target = os.path.join(dev, node)
        open(target, "a").close()
        try:
            sc.mount(host, target, None, sc.MS_BIND)
        except OSError:
            os.unlink(target)  # e.g. no controlling tty for /dev/tty: leave it out
    for name, dest in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                       ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(dest, os.path.join(dev, name))
    os.makedirs(os.path.join(dev, "pts"))
    try:
        sc.mount("devpts", os.path.join(dev, "pts"), "devpts", sc.MS_NOSUID | sc.MS_NOEXEC,
                 "newinstance,ptmxmode=0666,mode=620")
        os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    except OSError:
        pass  # ptys are a nicety; a worker without them still runs
    os.makedirs(os.path.join(dev, "shm"))
    sc.mount("tmpfs", os.path.join(dev, "shm"), "tmpfs", sc.MS_NOSUID | sc.MS_NODEV,
             "mode=1777")


def enter_sandbox_root(params: LaunchParams) -> None:
    """In the sandbox init (PID 1): private mount ns, /proc, /dev, /tmp, hostname, pivot_root.

    Leaves the process in ``params.workdir`` (created when missing) with NOFILE raised.
    """
    root = params.merged
    step = "unshare mount namespace"
    try:
        sc.unshare(sc.CLONE_NEWNS)
        step = "mount /proc"
        proc = mountpoint(root, "/proc", replace_link=True)
        sc.mount("proc", proc, "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        step = "read-only /proc/sys"
        _readonly_proc_paths(proc)
        step = "mount /dev"
        _mount_dev(root)
        step = "mount /tmp"
        tmp = mountpoint(root, "/tmp", replace_link=True)
        sc.mount("tmpfs", tmp, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777")
        step = "set hostname"
        sc.sethostname(params.hostname)
        step = "pivot_root"
        os.chdir(root)
        sc.pivot_root(".", ".")
        sc.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
        step = f"workdir {params.workdir}"
        os.makedirs(params.workdir, exist_ok=True)
        os.chdir(params.workdir)
    except OSError as exc:
        raise SetupFailed(step, str(exc)) from exc
    raise_nofile()


def raise_nofile() -> None:
    """Soft and hard NOFILE to 65536 where allowed (as libkrun's rlimits do for the VM)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE_LIMIT if hard == resource.RLIM_INFINITY else min(NOFILE_LIMIT, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, soft)))
    except (ValueError, OSError):
        pass  # keep the inherited limit; not worth failing a start over


def resolve_program(argv0: str, env: dict[str, str]) -> str:
    """The path execve will run for ``argv0``, searched in the sandbox's own PATH."""
    if "/" in argv0:
        return argv0
    for directory in env.get("PATH", DEFAULT_PATH).split(":"):
        candidate = os.path.join(directory or ".", argv0)
        if is_executable_file(candidate):
            return candidate
    return argv0


def is_executable_file(path: str) -> bool:
    """True when ``path`` is a regular file with an execute bit."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)
