"""The few Linux syscalls Python 3.11 lacks (unshare, mount, pivot_root, ...), through libc.

Each wrapper raises ``OSError`` with the real errno and a message naming the call and its
target, so a failing setup step reads "mount overlay on /x: [Errno 1] Operation not permitted".
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15

# pivot_root has no glibc wrapper; syscall numbers per architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41, "riscv64": 41}

_libc: ctypes.CDLL | None = None


def load() -> None:
    """Load libc now: call before fork() in a threaded process (dlopen after fork can hang)."""
    _lib()


def _lib() -> ctypes.CDLL:
    global _libc  # one CDLL handle per process; loading it is not free
    if _libc is None:
        # dlopen(NULL): libc's symbols are already in the process. find_library would run
        # ldconfig/gcc in a subprocess, which costs more than the whole sandbox setup.
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def unshare(flags: int) -> None:
    """unshare(2)."""
    _check(_lib().unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    """setns(2): join the namespace open at ``fd``."""
    _check(_lib().setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2); ``target`` must exist."""
    def enc(s: str | None) -> bytes | None:
        return None if s is None else os.fsencode(s)
    res = _lib().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(res, f"mount {fstype or source or ''} on {target}".replace("  ", " "))


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_lib().umount2(os.fsencode(target), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2) through syscall(2)."""
    machine = os.uname().machine
    nr = _SYS_PIVOT_ROOT.get(machine)
    if nr is None:
        raise OSError(38, f"pivot_root: unsupported architecture {machine}")
    _check(_lib().syscall(ctypes.c_long(nr), os.fsencode(new_root), os.fsencode(put_old)),
           f"pivot_root {new_root}")


# The new mount API: one syscall number on every architecture (asm-generic, Linux >= 5.2/5.12).
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_OPEN_TREE_CLONE = 1
_OPEN_TREE_CLOEXEC = os.O_CLOEXEC
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_IDMAP = 0x00100000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def idmapped_bind(source: str, target: str, userns_fd: int) -> None:
    """Bind ``source`` (not its submounts) at ``target`` with the id mapping of ``userns_fd``.

    open_tree(OPEN_TREE_CLONE) + mount_setattr(MOUNT_ATTR_IDMAP) + move_mount (Linux >= 5.12;
    overlayfs accepts such layers from 5.19).
    """
    lib = _lib()
    fd = _check(lib.syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(_AT_FDCWD),
                            os.fsencode(source),
                            ctypes.c_uint(_OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC)),
                f"open_tree {source}")
    try:
        attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
        _check(lib.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(fd), b"",
                           ctypes.c_uint(_AT_EMPTY_PATH), ctypes.byref(attr),
                           ctypes.c_size_t(ctypes.sizeof(attr))), f"idmap {source}")
        _check(lib.syscall(ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_int(fd), b"",
                           ctypes.c_int(_AT_FDCWD), os.fsencode(target),
                           ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH)), f"move_mount {target}")
    finally:
        os.close(fd)


def sethostname(name: str) -> None:
    """sethostname(2) (needs a UTS namespace of our own)."""
    raw = name.encode()
    _check(_lib().sethostname(raw, ctypes.c_size_t(len(raw))), f"sethostname {name}")


def set_parent_death_signal(sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG): the kernel sends ``sig`` when our parent exits."""
    _check(_lib().prctl(ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(sig), 0, 0, 0),
           "prctl(PR_SET_PDEATHSIG)")


def set_process_name(name: str) -> None:
    """prctl(PR_SET_NAME): the ``comm`` shown by ps (best effort, 15 bytes; Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    _lib().prctl(ctypes.c_int(PR_SET_NAME), name.encode()[:15], 0, 0, 0)
