"""Read a full-copy sandbox root (``reflink``/``copy`` modes) as the changes it makes to its image.

Where overlay is unavailable the sandbox root is a copy of the cached image rootfs
(``managed/<name>/rootfs``, SPEC §7), so there is no upper dir to read: the changes are found by
walking the root beside the image rootfs it was copied from.

- An entry absent from the image, or of another type, is added (a directory with everything
  below it).
- An entry present in both is changed when its mode, owner, mtime, size or link target differ,
  or when its ctime is later than the copy was finished (``copied_ns``) and its bytes differ:
  a write that kept size and mtime (``touch -r``, tar/dpkg restoring archive times) still moves
  the ctime, which nothing can set back. Files untouched since the copy are never read.
- An entry of the image absent from the root is a whiteout (only the topmost one).

The output is the same sorted :class:`~daemon.export.upper.Change` list the overlay reader gives,
so the layer writer and its cache do not know which mode the root has.
"""

from __future__ import annotations

import filecmp
import os
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from daemon.export.owners import SandboxOwners, sandbox_owners
from daemon.export.upper import Change, Kind, UpperDirError, _link_hardlinks


def diff_root(root: Path, image: Path, copied_ns: int, *, owners: SandboxOwners | None = None
              ) -> list[Change]:
    """Every change ``root`` makes to ``image``, sorted by path (bytewise)."""
    changes = list(_walk(str(root), str(image), "", owners or sandbox_owners(), copied_ns))
    changes.sort(key=lambda c: c.path.encode())
    return _link_hardlinks(changes)


def _entry(path: str, rel: str, st: os.stat_result, owners: SandboxOwners) -> Change:
    uid, gid = owners.of(st)
    meta = Change(rel, Kind.FILE, mode=stat.S_IMODE(st.st_mode), uid=uid, gid=gid,
                  mtime=int(st.st_mtime), ctime_ns=st.st_ctime_ns)
    if stat.S_ISDIR(st.st_mode):
        return replace(meta, kind=Kind.DIR)
    if stat.S_ISLNK(st.st_mode):
        return replace(meta, kind=Kind.SYMLINK, link_target=os.readlink(path))
    if stat.S_ISREG(st.st_mode):
        return replace(meta, size=st.st_size, source=Path(path),
                       ino=st.st_ino if st.st_nlink > 1 else 0)
    raise UpperDirError(f"{rel}: a socket, fifo or device node in the sandbox root cannot go "
                        "into an image; remove it from the worker's install step")


def _same(a: os.stat_result, b: os.stat_result, a_path: str, b_path: str,
          copied_ns: int) -> bool:
    if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode) or a.st_mode != b.st_mode \
            or (a.st_uid, a.st_gid) != (b.st_uid, b.st_gid):
        return False
    if stat.S_ISDIR(a.st_mode):
        return True  # children are compared one by one; a directory's mtime follows them
    if int(a.st_mtime) != int(b.st_mtime) or a.st_size != b.st_size:
        return False
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(a_path) == os.readlink(b_path)
    return a.st_ctime_ns <= copied_ns or filecmp.cmp(a_path, b_path, shallow=False)


def _walk(root: str, image: str | None, rel: str, owners: SandboxOwners,
          copied_ns: int) -> Iterator[Change]:
    with os.scandir(root) as it:
        names = {e.name: e for e in it}
    base: dict[str, os.DirEntry[str]] = {}
    if image is not None:
        try:
            with os.scandir(image) as it:
                base = {e.name: e for e in it}
        except (FileNotFoundError, NotADirectoryError):
            base = {}
    for name in sorted(base.keys() - names.keys()):
        yield Change(f"{rel}/{name}" if rel else name, Kind.WHITEOUT)
    for name in sorted(names):
        entry = names[name]
        path = f"{rel}/{name}" if rel else name
        st = entry.stat(follow_symlinks=False)
        before = base.get(name)
        old = before.stat(follow_symlinks=False) if before is not None else None
        if old is None or not _same(st, old, entry.path, before.path if before else "",
                                    copied_ns):
            yield _entry(entry.path, path, st, owners)
        if stat.S_ISDIR(st.st_mode):
            same_kind = old is not None and stat.S_ISDIR(old.st_mode)
            yield from _walk(entry.path, before.path if same_kind and before else None, path,
                             owners, copied_ns)
