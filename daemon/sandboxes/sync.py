"""Copying a project into a sandbox's ``/workspace``, and re-syncing it incrementally.

Safety comes from the traversal, not from path checks: both trees are walked through directory
file descriptors, entries are only ever named relative to their parent fd (names from
``scandir`` never contain ``/`` or ``..``), and every open carries ``O_NOFOLLOW``. So a symlink in
the project (to ``/etc/shadow``, a symlinked directory to ``/``) is copied as a link and never
read through, and a symlink the workload planted in ``/workspace`` is replaced, never written
through. Fifos, sockets and devices are skipped (opening a fifo would block; devices are never
copied).

The workspace mirrors the project (like ``rsync -a --delete``) except for the skip-list names,
which are neither copied nor deleted at any depth: dependencies installed inside ``/workspace``
(``node_modules``, ``.venv``, ``target``) survive a re-sync. A file is re-copied when its size or
mtime (ns) differs; copied files get the project file's mtime so the next sync sees them equal.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from daemon.errors import InvalidProject
from daemon.sandboxes.beneath import DIR_FLAGS, open_dir_at, remove_entry

log = logging.getLogger(__name__)

# SPEC §7: never copied into /workspace, at any depth; never deleted from it either.
SKIP_NAMES = frozenset({"node_modules", ".git", "target", "__pycache__", ".venv", "dist"})
MAX_DEPTH = 256
_SRC_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DST_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY_CHUNK = 1 << 24


@dataclass
class SyncStats:
    """What one sync did. ``special`` lists skipped fifos/sockets/devices (relative paths)."""

    copied: int = 0
    links: int = 0
    dirs_created: int = 0
    deleted: int = 0
    unchanged: int = 0
    special: list[str] = field(default_factory=list)


def sync_project(project: Path, workspace: Path) -> SyncStats:
    """Make ``workspace`` mirror ``project`` (skip list excepted); return what changed.

    ``project`` is the user's directory (the path itself may be a symlink the user chose; nothing
    beneath it is followed). ``workspace`` is the host path of the sandbox's ``/workspace``; its
    parent belongs to the daemon, the last component is opened without following (the workload
    may have replaced ``/workspace`` with a link). Call it only while the sandbox is not running.

    Raises ``InvalidProject`` when the project is not a readable directory or nests deeper than
    ``MAX_DEPTH`` directories.
    """
    try:
        src_fd = os.open(project, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidProject(f"cannot read project directory {project}: {exc.strerror}") from exc
    try:
        workspace.parent.mkdir(parents=True, exist_ok=True)
        parent_fd = os.open(workspace.parent, DIR_FLAGS & ~os.O_NOFOLLOW)
        try:
            dst_fd = open_dir_at(parent_fd, workspace.name)
        finally:
            os.close(parent_fd)
        try:
            stats = SyncStats()
            _sync_dir(src_fd, dst_fd, "", 0, stats)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    if stats.special:
        log.info("skipped %d special file(s) in %s: %s", len(stats.special), project,
                 ", ".join(stats.special[:5]))
    return stats


def _scan(fd: int) -> dict[str, os.stat_result]:
    out: dict[str, os.stat_result] = {}
    with os.scandir(fd) as it:
        for entry in it:
            if entry.name in SKIP_NAMES:
                continue
            try:
                out[entry.name] = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
    return out


def _sync_dir(src_fd: int, dst_fd: int, rel: str, depth: int, stats: SyncStats) -> None:
    if depth > MAX_DEPTH:
        raise InvalidProject(f"project nests deeper than {MAX_DEPTH} directories at {rel!r}")
    src = _scan(src_fd)
    dst = _scan(dst_fd)
    kept: set[str] = set()  # names that have a counterpart in the workspace after this pass
    for name, st in src.items():
        mode = st.st_mode
        have = dst.get(name)
        if stat.S_ISREG(mode):
            if (have is not None and stat.S_ISREG(have.st_mode) and have.st_size == st.st_size
                    and have.st_mtime_ns == st.st_mtime_ns):
                stats.unchanged += 1
            elif _copy_file(src_fd, dst_fd, name, have is not None):
                stats.copied += 1
            else:  # vanished or turned special since the scan
                stats.special.append(f"{rel}{name}")
                continue
        elif stat.S_ISLNK(mode):
            if not _sync_link(src_fd, dst_fd, name, have, stats):
                continue
        elif stat.S_ISDIR(mode):
            if not _sync_subdir(src_fd, dst_fd, name, have, rel, depth, stats):
                continue
        else:
            stats.special.append(f"{rel}{name}")
            continue
        kept.add(name)
    for name in dst.keys() - kept:
        remove_entry(dst_fd, name)
        stats.deleted += 1


def _sync_link(src_fd: int, dst_fd: int, name: str, have: os.stat_result | None,
               stats: SyncStats) -> bool:
    try:
        target = os.readlink(name, dir_fd=src_fd)
    except OSError:
        return False
    if have is not None and stat.S_ISLNK(have.st_mode):
        if os.readlink(name, dir_fd=dst_fd) == target:
            stats.unchanged += 1
            return True
    if have is not None:
        remove_entry(dst_fd, name)
    os.symlink(target, name, dir_fd=dst_fd)
    stats.links += 1
    return True


def _sync_subdir(src_fd: int, dst_fd: int, name: str, have: os.stat_result | None, rel: str,
                 depth: int, stats: SyncStats) -> bool:
    try:
        child_src = os.open(name, DIR_FLAGS, dir_fd=src_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            return False  # replaced by a link or removed while we looked: never follow
        raise
    try:
        if have is None or not stat.S_ISDIR(have.st_mode):
            stats.dirs_created += 1
        child_dst = open_dir_at(dst_fd, name)
        try:
            _sync_dir(child_src, child_dst, f"{rel}{name}/", depth + 1, stats)
        finally:
            os.close(child_dst)
    finally:
        os.close(child_src)
    return True


def _copy_file(src_fd: int, dst_fd: int, name: str, exists: bool) -> bool:
    """Copy one regular file; False when the source is no longer a regular file."""
    try:
        sfd = os.open(name, _SRC_FILE_FLAGS, dir_fd=src_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOENT, errno.ENXIO):
            return False
        raise
    try:
        st = os.fstat(sfd)
        if not stat.S_ISREG(st.st_mode):
            return False
        if exists:
            remove_entry(dst_fd, name)
        dfd = os.open(name, _DST_FILE_FLAGS, 0o600, dir_fd=dst_fd)
        try:
            _copy_bytes(sfd, dfd, st.st_size)
            # setuid/setgid are never carried into the sandbox.
            os.fchmod(dfd, stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID))
            os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dfd)
        return True
    finally:
        os.close(sfd)


def _copy_bytes(sfd: int, dfd: int, size: int) -> None:
    if size == 0:
        return
    try:
        while os.copy_file_range(sfd, dfd, _COPY_CHUNK):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    os.lseek(sfd, 0, os.SEEK_SET)
    os.lseek(dfd, 0, os.SEEK_SET)
    os.ftruncate(dfd, 0)
    while chunk := os.read(sfd, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dfd, view):]
