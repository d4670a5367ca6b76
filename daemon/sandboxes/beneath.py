"""Opening and writing paths inside a sandbox root without ever following a symlink.

A running workload owns its root: it can replace ``/workspace/x`` or ``/etc/ssl`` with a symlink
to ``/etc`` (an absolute link that, resolved on the host, points at the host's ``/etc``). Every
host-side write into a sandbox therefore walks from a directory fd one component at a time with
``O_NOFOLLOW``; a component that is not a real directory is removed and recreated (the workload's
own mess, inside its own root) — never resolved.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
DIR_MODE = 0o755


def _components(relpath: str) -> list[str]:
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"path {relpath!r} must stay beneath its root (no '..')")
    return parts


def remove_entry(dir_fd: int, name: str) -> None:
    """Remove ``name`` under ``dir_fd`` whatever it is (a directory tree is removed fd-relative)."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def open_dir_at(dir_fd: int, name: str, *, create: bool = True) -> int:
    """Open directory ``name`` under ``dir_fd`` with O_NOFOLLOW; replace a non-directory.

    With ``create``, a missing directory is made (0755) and anything that is not a real directory
    (symlink, file, overlay whiteout) is removed first. Without it, FileNotFoundError /
    NotADirectoryError propagate.
    """
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        # Only ELOOP (a symlink, refused by O_NOFOLLOW) or ENOTDIR (file, device, whiteout)
        # mean "not a real directory"; anything else (EMFILE, EACCES) must not delete it.
        if not create or exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        remove_entry(dir_fd, name)
    os.mkdir(name, DIR_MODE, dir_fd=dir_fd)
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd)


def open_root(root: Path, *, create: bool = True) -> int:
    """Open the sandbox root itself (a path the daemon built; its parents are ours)."""
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return os.open(root, DIR_FLAGS)


def open_dir_beneath(root: Path, relpath: str, *, create: bool = True) -> int:
    """Open ``root/relpath`` as a directory, never following a symlink below ``root``."""
    fd = open_root(root, create=create)
    try:
        for part in _components(relpath):
            nfd = open_dir_at(fd, part, create=create)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_file_beneath(root: Path, relpath: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``root/relpath`` (parents created), replacing what is there, no follow.

    Written to a temp name and renamed over the target, so the file is whole or absent.
    """
    parts = _components(relpath)
    if not parts:
        raise ValueError("write_file_beneath needs a file name")
    dir_fd = open_dir_beneath(root, "/".join(parts[:-1]))
    try:
        name = parts[-1]
        tmp = f".{name}.iii-tmp"
        remove_entry(dir_fd, tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode, dir_fd=dir_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            st = os.lstat(name, dir_fd=dir_fd)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def read_file_beneath(root: Path, relpath: str, limit: int = 1 << 20) -> bytes | None:
    """Read a small regular file under ``root`` without following symlinks; None if absent/odd."""
    parts = _components(relpath)
    try:
        dir_fd = open_dir_beneath(root, "/".join(parts[:-1]), create=False)
    except (FileNotFoundError, NotADirectoryError, OSError):
        return None
    try:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dir_fd)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return os.read(fd, limit)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)
