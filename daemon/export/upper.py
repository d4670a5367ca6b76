"""Read a sandbox's writable layer as the changes it makes to its base image.

The one place that knows the on-disk format of ``$III_HOME/managed/<name>/upper`` (SPEC §7: the
overlayfs upper dir of the sandbox root, lower = ``$III_HOME/rootfs/<slug>``):

- **Added or changed entry**: a regular file, directory or symlink at its path, with the mode,
  owner and mtime the sandbox sees (owners are host ids; :func:`sandbox_ids` maps them back
  through the launcher's user namespace). A directory that only exists to hold changed children
  is copied up too; it is emitted like any other directory (harmless: same metadata as lower).
- **Deleted entry** (whiteout): a character device with device number 0:0. Defensively, an
  AUFS/OCI-style ``.wh.<name>`` regular file is read as a whiteout of ``<name>`` too.
- **Opaque directory** (the sandbox removed a directory and made a new one in its place, so
  nothing of the lower one shows through): xattr ``user.overlay.opaque`` = ``y`` (mounts with
  ``userxattr``, kernel >= 5.11 in a user namespace) or ``trusted.overlay.opaque`` = ``y``
  (older mounts).
- **Hard links**: regular files of the upper dir sharing an inode (``cp -l``, package managers
  that link files into place) come out once as a file and then as hard links to it.
- ``redirect_dir`` and ``metacopy`` are off when the launcher mounts: a ``*.overlay.redirect`` or
  ``*.overlay.metacopy`` xattr means the directory was written by a mount we do not understand,
  and reading it as plain files would export something wrong, so :class:`UpperDirError` is raised.

Roots provisioned without overlay (``reflink``/``copy`` modes, a full tree in
``managed/<name>/rootfs``) are not read here: exporting them is refused by the caller.

Entries come out sorted by path (bytewise) so the layer built from them is deterministic.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque")
# Features the launcher keeps off; their presence means files alone do not describe the layer.
UNSUPPORTED_XATTRS = ("user.overlay.redirect", "trusted.overlay.redirect",
                      "user.overlay.metacopy", "trusted.overlay.metacopy")
AUFS_WHITEOUT_PREFIX = ".wh."


class UpperDirError(Exception):
    """Raised when the upper dir holds something this reader cannot export faithfully."""


class Kind(enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"  # another name of an earlier FILE (``link_target``, a root path)
    WHITEOUT = "whiteout"  # the path is deleted in the sandbox


@dataclass(frozen=True)
class Change:
    """One entry of the layer. ``path`` is relative to the root, ``/``-separated, no leading
    slash; ``source`` is the host file to read (None for whiteouts)."""

    path: str
    kind: Kind
    mode: int = 0  # permission bits incl. setuid/setgid/sticky
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    link_target: str = ""
    opaque: bool = False  # DIR only: hide everything the base has below it
    source: Path | None = None
    # st_ctime_ns: changes on every write, chmod or chown. Not part of the layer; with the other
    # fields it tells a re-export that nothing changed (service.py's layer cache).
    ctime_ns: int = 0
    # inode number of a regular file with more than one link (else 0): names sharing it are
    # written as one file and tar hard links to it (:func:`_link_hardlinks`).
    ino: int = 0


def sandbox_ids(host_uid: int) -> tuple[int, int] | None:
    """How the launcher maps ids (``vmm_ffi.isolation.userns.id_maps``): host root maps a range 1:1
    (None = identity); any other user maps only itself, as root."""
    return None if host_uid == 0 else (os.getuid(), os.getgid())


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None  # absent, or xattrs unsupported on this filesystem: not set


def _check_unsupported(path: str, rel: str) -> None:
    for name in UNSUPPORTED_XATTRS:
        if _xattr(path, name) is not None:
            raise UpperDirError(
                f"{rel or '/'} carries the overlay xattr {name}: this sandbox was written by an "
                "overlay mount with redirect_dir or metacopy on, which export cannot read; "
                "recreate it with `iii worker add --force`")


def read_upper(upper: Path, *, host_uid: int | None = None) -> list[Change]:
    """Every change ``upper`` makes to its lower dir, sorted by path.

    Raises :class:`UpperDirError` for entries that cannot be exported (sockets, fifos, devices
    other than whiteouts, redirect/metacopy xattrs).
    """
    own = sandbox_ids(os.getuid() if host_uid is None else host_uid)
    changes = list(_walk(str(upper), "", own))
    changes.sort(key=lambda c: c.path.encode())
    return _link_hardlinks(changes)


def _link_hardlinks(changes: list[Change]) -> list[Change]:
    """Regular files sharing an inode: the first in path order stays a FILE, the others become
    HARDLINKs to it (an OCI layer's tar link entries; unpackers recreate the link). Links to
    files outside the upper dir (nlink counts those too) find no partner and stay files."""
    first: dict[int, str] = {}
    out = []
    for c in changes:
        if c.kind is Kind.FILE and c.ino:
            target = first.setdefault(c.ino, c.path)
            if target != c.path:
                c = replace(c, kind=Kind.HARDLINK, link_target=target, size=0, source=None)
        out.append(c)
    return out


def _ids(st: os.stat_result, own: tuple[int, int] | None) -> tuple[int, int]:
    if own is None:
        return st.st_uid, st.st_gid
    # Only the daemon's own ids exist inside the sandbox (as 0); others show as nobody.
    uid = 0 if st.st_uid == own[0] else 65534
    gid = 0 if st.st_gid == own[1] else 65534
    return uid, gid


def _walk(dirpath: str, rel: str, own: tuple[int, int] | None) -> Iterator[Change]:
    with os.scandir(dirpath) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = f"{rel}/{entry.name}" if rel else entry.name
        st = entry.stat(follow_symlinks=False)
        uid, gid = _ids(st, own)
        meta = Change(path, Kind.FILE, mode=stat.S_IMODE(st.st_mode), uid=uid, gid=gid,
                      mtime=int(st.st_mtime), ctime_ns=st.st_ctime_ns)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            yield Change(path, Kind.WHITEOUT)
        elif entry.name.startswith(AUFS_WHITEOUT_PREFIX) and stat.S_ISREG(st.st_mode):
            hidden = entry.name[len(AUFS_WHITEOUT_PREFIX):]
            if hidden.startswith(".wh."):  # ".wh..wh..opq" and friends: not produced by overlay
                raise UpperDirError(f"{path}: unexpected overlay marker file")
            yield Change(f"{rel}/{hidden}" if rel else hidden, Kind.WHITEOUT)
        elif stat.S_ISDIR(st.st_mode):
            _check_unsupported(entry.path, path)
            opaque = any(_xattr(entry.path, n) == b"y" for n in OPAQUE_XATTRS)
            yield replace(meta, kind=Kind.DIR, opaque=opaque)
            yield from _walk(entry.path, path, own)
        elif stat.S_ISLNK(st.st_mode):
            yield replace(meta, kind=Kind.SYMLINK, link_target=os.readlink(entry.path))
        elif stat.S_ISREG(st.st_mode):
            _check_unsupported(entry.path, path)
            yield replace(meta, size=st.st_size, source=Path(entry.path),
                          ino=st.st_ino if st.st_nlink > 1 else 0)
        else:
            raise UpperDirError(
                f"{path}: a socket, fifo or device node in the sandbox root cannot go into an "
                "image; remove it from the worker's install step")
