"""Where a sandbox lives on the host: every path under ``$III_HOME/managed/<name>/``.

The name becomes a path component, so it is validated once, here, before any path is built
(``validate_sandbox_id``). Deletion renames the directory to a dot-name first so a loader that
scans ``managed/`` never sees a half-deleted sandbox (loaders skip dot-directories).
"""

from __future__ import annotations

import enum
import os
import re
import stat
import uuid
from pathlib import Path

from daemon.errors import InvalidArgument, InvalidState
from daemon.sandboxes.procinfo import is_alive, is_our_launcher, read_pid_record
from daemon.trees import remove_tree
from manifests.spec import NAME_PATTERN, invalid_name_message

# SPEC §3: the worker name rule (one copy, the manifest's); it becomes a directory name.
_SANDBOX_ID = re.compile(NAME_PATTERN)

MARKER_RELPATH = "var/.iii-prepared"
WORKSPACE_RELPATH = "workspace"


def validate_sandbox_id(name: object) -> str:
    """Return ``name`` if it is a valid sandbox id (SPEC §3 name rule), else raise.

    Raises ``InvalidArgument`` naming the value and the rule. ``"."``/``".."`` and anything with a
    slash or NUL can never pass (first char must be alphanumeric, no ``/`` in the alphabet).
    """
    if not isinstance(name, str) or not _SANDBOX_ID.fullmatch(name):
        raise InvalidArgument(f"invalid sandbox name: {invalid_name_message('name', name)}")
    return name


class RootMode(enum.Enum):
    """How the sandbox root is made from the cached image rootfs."""

    OVERLAY = "overlay"  # lower = image cache (shared, read-only), upper+work here
    REFLINK = "reflink"  # copy-on-write clone into rootfs/
    COPY = "copy"  # plain full copy into rootfs/ (last resort, logged)


class SandboxLayout:
    """Every host path of one sandbox. Building one validates the name; nothing touches disk.

    >>> lay = SandboxLayout(Path("/home/u/.iii"), "calc")
    >>> lay.upper
    PosixPath('/home/u/.iii/managed/calc/upper')
    """

    def __init__(self, home: Path, name: str) -> None:
        self.name = validate_sandbox_id(name)
        self.home = Path(home)
        self.managed = self.home / "managed"
        self.dir = self.managed / self.name

    def __repr__(self) -> str:
        return f"SandboxLayout({str(self.home)!r}, {self.name!r})"

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def work(self) -> Path:
        return self.dir / "work"

    @property
    def merged(self) -> Path:
        return self.dir / "merged"

    @property
    def rootfs(self) -> Path:
        """The full root in copy/reflink mode."""
        return self.dir / "rootfs"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def worker_log(self) -> Path:
        return self.logs / "worker.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "launcher.pid"

    @property
    def bootstrap(self) -> Path:
        return self.dir / "bootstrap.json"

    @property
    def exit_file(self) -> Path:
        return self.dir / "exit.json"

    @property
    def sync_state(self) -> Path:
        """What the last project sync copied (host side: the workload cannot forge it)."""
        return self.dir / "sync-state"

    @property
    def lock_file(self) -> Path:
        return self.dir / ".lock"

    @property
    def oneshot_flag(self) -> Path:
        """Present while a setup/install run owns ``launcher.pid``: a daemon restarting then must
        not adopt that launcher as the worker (it kills it; the next start re-runs install)."""
        return self.dir / "oneshot"

    @property
    def manual_stop_flag(self) -> Path:
        """Present while the user's ``stop`` holds: a restarted daemon must not auto-start the
        worker either (the flag lives with the sandbox, so ``remove`` and ``--force`` drop it)."""
        return self.dir / "manual-stop"

    def mode(self) -> RootMode | None:
        """The provisioning mode recorded on disk, or None when not provisioned yet."""
        try:
            text = (self.dir / "root-mode").read_text().strip()
        except FileNotFoundError:
            return None
        try:
            return RootMode(text)
        except ValueError:
            return None

    def writable_root(self) -> Path:
        """Host path of the sandbox root's writable layer: ``upper/`` (overlay) or ``rootfs/``."""
        mode = self.mode()
        return self.upper if mode in (None, RootMode.OVERLAY) else self.rootfs

    @property
    def marker(self) -> Path:
        return self.writable_root() / MARKER_RELPATH

    @property
    def workspace(self) -> Path:
        return self.writable_root() / WORKSPACE_RELPATH

    def exists(self) -> bool:
        return self.dir.is_dir()

    def remove(self) -> int:
        """Delete the sandbox directory; return the bytes freed (0 when it did not exist).

        Renames to ``managed/.<name>-<id>`` first (atomic; loaders skip dot-dirs), then removes.
        Never follows symlinks (the workload may have planted some in its upper layer).
        Raises ``InvalidState`` while the sandbox's launcher runs (stop it first).
        """
        record = read_pid_record(self.pid_file)
        if (record is not None and is_alive(record.pid, record.start_time)
                and is_our_launcher(record.pid, self.bootstrap)):
            raise InvalidState(f"sandbox {self.name!r} is running (launcher pid {record.pid}); "
                               "stop it before removing it")
        try:
            st = os.lstat(self.dir)
        except FileNotFoundError:
            return 0
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(self.dir)
            return 0
        doomed = self.managed / f".{self.name}-{uuid.uuid4().hex[:12]}"
        os.rename(self.dir, doomed)
        freed = disk_usage(doomed)
        remove_tree(doomed)
        return freed


def disk_usage(root: Path) -> int:
    """Bytes allocated under ``root`` (lstat, hardlinks counted once, symlinks not followed)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [str(root)]
    while stack:
        path = stack.pop()
        try:
            it = os.scandir(path)
        except OSError:
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return total
