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
mtime (ns) differs from what was copied last time. That record (``state_file``, kept on the
host in the sandbox dir where the workload cannot forge it) spares a stat of every workspace file:
an unchanged re-sync costs one ``lstat`` per project file plus one ``getdents`` per directory on
each side. Without a record (first sync, lost file) the workspace files are stat'ed instead. An
entry whose type changed in the workspace (a file the workload replaced by a link or removed) is
always re-copied; an in-place edit made inside the sandbox is kept until the project file changes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from daemon.errors import InvalidProject
from daemon.sandboxes.beneath import DIR_FLAGS, open_dir_at, remove_entry
from vmm_ffi.statefiles import write_atomic

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


def sync_project(project: Path, workspace: Path, state_file: Path | None = None) -> SyncStats:
    """Make ``workspace`` mirror ``project`` (skip list excepted); return what changed.

    ``project`` is the user's directory (the path itself may be a symlink the user chose; nothing
    beneath it is followed). ``workspace`` is the host path of the sandbox's ``/workspace``; its
    parent belongs to the daemon, the last component is opened without following (the workload
    may have replaced ``/workspace`` with a link). ``state_file`` records what was copied, for
    the next sync. Call it only while the sandbox is not running.

    Raises ``InvalidProject`` when the project is not a readable directory or nests deeper than
    ``MAX_DEPTH`` directories.
    """
    try:
        src_fd = os.open(project, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidProject(f"cannot read project directory {project}: {exc.strerror}") from exc
    walk = _Walk(_load_state(state_file), state_file)
    try:
        workspace.parent.mkdir(parents=True, exist_ok=True)
        parent_fd = os.open(workspace.parent, DIR_FLAGS & ~os.O_NOFOLLOW)
        try:
            if walk.known is not None and not _is_real_dir(parent_fd, workspace.name):
                walk.known = None  # the workspace itself was replaced: trust nothing recorded
            dst_fd = open_dir_at(parent_fd, workspace.name)
        finally:
            os.close(parent_fd)
        try:
            st = os.fstat(dst_fd)
            walk.workspace_id = (st.st_dev, st.st_ino)
            walk.sync_dir(src_fd, dst_fd, "", 0)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    stats = walk.stats
    if state_file is not None and (walk.known is None or walk.seen != walk.known):
        write_atomic(state_file, msgspec.msgpack.encode(walk.seen), 0o600)
    if stats.special:
        log.info("skipped %d special file(s) in %s: %s", len(stats.special), project,
                 ", ".join(stats.special[:5]))
    return stats


def _is_real_dir(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(name, dir_fd=dir_fd).st_mode)
    except FileNotFoundError:
        return False


def _load_state(path: Path | None) -> dict[str, tuple[int, int]] | None:
    if path is None:
        return None
    try:
        return msgspec.msgpack.decode(path.read_bytes(), type=dict[str, tuple[int, int]])
    except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def _scan(fd: int) -> list[os.DirEntry[str]]:
    with os.scandir(fd) as it:
        return [e for e in it if e.name not in SKIP_NAMES]


class _Walk:
    """One sync: stats, the previous record (``known``) and the new one (``seen``)."""

    def __init__(self, known: dict[str, tuple[int, int]] | None, state_file: Path | None) -> None:
        self.stats = SyncStats()
        self.known = known
        self.seen: dict[str, tuple[int, int]] = {}
        self._state_file = state_file
        self.workspace_id: tuple[int, int] | None = None

    def will_change(self) -> None:
        # Before the first write, drop the record: if this sync dies half-way, the next one
        # compares against the workspace itself instead of a record that no longer holds.
        if self._state_file is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._state_file)
            self._state_file = None

    def sync_dir(self, src_fd: int, dst_fd: int, rel: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise InvalidProject(f"project nests deeper than {MAX_DEPTH} directories at "
                                 f"{rel!r}")
        stats, known, seen = self.stats, self.known, self.seen
        dst = {e.name: e for e in _scan(dst_fd)}
        kept: set[str] = set()  # names with a counterpart in the workspace after this pass
        unchanged = 0
        for entry in _scan(src_fd):
            name = entry.name
            have = dst.get(name)
            try:
                if entry.is_file(follow_symlinks=False):  # the common case first, kept lean
                    st = entry.stat(follow_symlinks=False)
                    key = rel + name
                    sig = (st.st_size, st.st_mtime_ns)
                    seen[key] = sig
                    if have is not None and have.is_file(follow_symlinks=False) and (
                            known.get(key) == sig if known is not None
                            else _same(have.stat(follow_symlinks=False), sig)):
                        unchanged += 1
                    elif _copy_file(src_fd, dst_fd, name, have is not None, self):
                        stats.copied += 1
                    else:  # vanished or turned special since the scan
                        del seen[key]
                        stats.special.append(key)
                        continue
                elif entry.is_symlink():
                    if not _sync_link(src_fd, dst_fd, name, have, stats, self):
                        continue
                elif entry.is_dir(follow_symlinks=False):
                    if not self.sync_subdir(src_fd, dst_fd, name, have, rel, depth):
                        continue
                else:
                    stats.special.append(rel + name)
                    continue
            except FileNotFoundError:
                continue  # removed from the project while we looked
            kept.add(name)
        stats.unchanged += unchanged
        for name in dst.keys() - kept:
            self.will_change()
            remove_entry(dst_fd, name)
            stats.deleted += 1

    def sync_subdir(self, src_fd: int, dst_fd: int, name: str, have: os.DirEntry[str] | None,
                    rel: str, depth: int) -> bool:
        try:
            child_src = os.open(name, DIR_FLAGS, dir_fd=src_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                return False  # replaced by a link or removed while we looked: never follow
            raise
        try:
            st = os.fstat(child_src)
            if (st.st_dev, st.st_ino) == self.workspace_id:
                return False  # the project contains $III_HOME: never copy the copy into itself
            if have is None or not have.is_dir(follow_symlinks=False):
                self.will_change()
                self.stats.dirs_created += 1
            child_dst = open_dir_at(dst_fd, name)
            try:
                self.sync_dir(child_src, child_dst, f"{rel}{name}/", depth + 1)
            finally:
                os.close(child_dst)
        finally:
            os.close(child_src)
        return True


def _same(st: os.stat_result, sig: tuple[int, int]) -> bool:
    return (st.st_size, st.st_mtime_ns) == sig


def _sync_link(src_fd: int, dst_fd: int, name: str, have: os.DirEntry[str] | None,
               stats: SyncStats, walk: _Walk) -> bool:
    try:
        target = os.readlink(name, dir_fd=src_fd)
    except OSError:
        return False
    if have is not None and have.is_symlink() and os.readlink(name, dir_fd=dst_fd) == target:
        stats.unchanged += 1
        return True
    walk.will_change()
    if have is not None:
        remove_entry(dst_fd, name)
    os.symlink(target, name, dir_fd=dst_fd)
    stats.links += 1
    return True


def _copy_file(src_fd: int, dst_fd: int, name: str, exists: bool, walk: _Walk) -> bool:
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
        walk.will_change()
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
