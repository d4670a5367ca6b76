"""Apply OCI layers, in order, to a fresh root directory — safely.

Runs in a worker thread (blocking I/O). Each layer is read as a stream (stdlib ``tarfile``
``r|`` over a gzip/zstd/plain decompressor chosen by magic bytes) and every member is checked
before anything touches the disk:

- names that are absolute or contain ``..`` are rejected;
- parent directories are walked component by component with ``lstat`` inside the root: a
  relative symlink is resolved inside the root, an absolute one (or one climbing above the root)
  means the write would land outside the image, and the layer is rejected;
- existing paths are unlinked before they are re-created (``O_EXCL|O_NOFOLLOW``), so nothing
  is ever written through a symlink or into another file's hardlink;
- hardlinks must name an existing non-directory inside the root; symlinks are kept as links
  and never followed; device nodes are skipped with a warning; setuid/setgid bits are dropped;
- whiteouts (``.wh.x``) delete ``x`` from lower layers; ``.wh..wh..opq`` empties the directory
  of everything lower layers put there;
- entry count and uncompressed bytes over all layers are capped (:class:`ExtractLimits`).

File ownership is not restored: the rootfs belongs to the user running the daemon (rootless,
like ``umoci unpack --rootless``); sandboxes map that user to root.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import shutil
import stat
import tarfile
import threading
from pathlib import Path

import zstandard

from daemon.images.errors import LayerError
from daemon.images.models import ExtractLimits
from daemon.images.tarstream import LayerReader

log = logging.getLogger(__name__)

MAX_SYMLINK_HOPS = 40
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class LayerExtractor:
    """Applies layers to ``root`` (an empty directory); call :meth:`finish` after the last."""

    def __init__(self, root: Path, limits: ExtractLimits, stop: threading.Event | None = None
                 ) -> None:
        self.root = str(root)
        self.limits = limits
        self.entries = 0
        self.bytes = 0
        self.skipped_devices = 0
        self.current: str | None = None  # the entry being written (named in I/O errors)
        # A non-root daemon must still traverse and delete its cache: its directories keep
        # owner rwx (inside the sandbox, the user namespace's root is not bound by them).
        self._owner_dir_bits = 0 if os.geteuid() == 0 else stat.S_IRWXU
        self._stop = stop or threading.Event()
        self._dir_meta: dict[str, tuple[int, float]] = {}
        self._created: set[str] = set()
        self._what = ""

    # ------------------------------------------------------------------ limits and layers

    def apply(self, blob_path: Path, what: str) -> None:
        """Apply one layer blob. Raises :class:`LayerError` naming ``what`` and the entry."""
        self._what, self._created = what, set()
        devices_before = self.skipped_devices
        try:
            with LayerReader(blob_path, what, self.bytes, self.limits.max_bytes) as reader:
                try:
                    for member in reader:
                        if self._stop.is_set():
                            raise LayerError(f"{what}: extraction cancelled")
                        self.entries += 1
                        if self.entries > self.limits.max_entries:
                            raise LayerError(f"{what}: image has more than the limit of "
                                             f"{self.limits.max_entries} entries")
                        self.current = member.name
                        self._apply_member(reader, member)
                finally:
                    self.bytes = reader.bytes
        except (tarfile.TarError, zstandard.ZstdError, EOFError, gzip.BadGzipFile) as exc:
            raise LayerError(f"{what}: not a valid (compressed) tar archive: {exc}") from exc
        except OSError as exc:
            where = exc.filename or self.current or "layer"
            hint = (" - free space under $III_HOME/rootfs or point III_HOME at a larger disk"
                    if exc.errno == errno.ENOSPC else "")
            raise LayerError(f"{what}: {exc.strerror or exc} ({where}){hint}") from exc
        if self.skipped_devices > devices_before:
            log.warning("%s: skipped %d device node(s); sandboxes get their own /dev", what,
                        self.skipped_devices - devices_before)

    def finish(self) -> int:
        """Apply directory modes and mtimes (deepest first); return the rootfs size in bytes."""
        for path in sorted(self._dir_meta, key=lambda p: p.count("/"), reverse=True):
            mode, mtime = self._dir_meta[path]
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    continue
                os.chmod(path, mode | self._owner_dir_bits)
                os.utime(path, (mtime, mtime))
            except FileNotFoundError:
                continue  # deleted by a later whiteout
        total = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                st = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
        return total

    # ------------------------------------------------------------------ members

    def _split(self, name: str, kind: str = "entry") -> list[str]:
        if name.startswith("/"):
            raise LayerError(f"{self._what}: {kind} {name!r} is an absolute path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise LayerError(f"{self._what}: {kind} {name!r} contains '..'")
        return parts

    def _resolve_dir(self, parts: list[str], name: str, create: bool) -> str | None:
        """Real path of the directory ``parts`` inside the root, following only symlinks that
        stay inside; ``None`` when it does not exist and ``create`` is false."""
        todo = list(reversed(parts))
        stack: list[str] = []
        hops = 0
        while todo:
            comp = todo.pop()
            if comp in ("", "."):
                continue
            if comp == "..":
                if not stack:
                    raise LayerError(f"{self._what}: entry {name!r} would be written outside "
                                     "the image root through a symlink")
                stack.pop()
                continue
            path = self.root + "/" + "/".join([*stack, comp])
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(path, 0o755)
                self._created.add(path)
                stack.append(comp)
                continue
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                hops += 1
                if target.startswith("/") or hops > MAX_SYMLINK_HOPS:
                    raise LayerError(
                        f"{self._what}: entry {name!r} would be written through symlink "
                        f"{'/'.join([*stack, comp])!r} -> {target!r}, which points outside the "
                        "image root")
                todo.extend(reversed(target.split("/")))
                continue
            if not stat.S_ISDIR(st.st_mode):
                if not create:
                    return None
                os.unlink(path)  # a lower layer's file where this layer has a directory
                os.mkdir(path, 0o755)
                self._created.add(path)
            stack.append(comp)
        return self.root + "".join("/" + c for c in stack)

    def _apply_member(self, reader: LayerReader, m: tarfile.TarInfo) -> None:
        parts = self._split(m.name)
        if not parts:
            if m.isdir():
                self._dir_meta[self.root] = (self._mode(m), m.mtime)
            return
        base = parts[-1]
        if base.startswith(".wh."):
            self._whiteout(parts, m.name)
            return
        parent = self._resolve_dir(parts[:-1], m.name, create=True)
        assert parent is not None
        dst = f"{parent}/{base}"
        if m.ischr() or m.isblk():
            self.skipped_devices += 1
            return
        try:
            existing: os.stat_result | None = os.lstat(dst)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            if m.isdir() and stat.S_ISDIR(existing.st_mode):
                self._dir_meta[dst] = (self._mode(m), m.mtime)
                self._created.add(dst)
                return
            if m.islnk() and self._link_source(m) == dst:
                return  # a hardlink to itself: nothing to do
            self._remove(dst, existing)
        self._created.add(dst)
        if m.isdir():
            os.mkdir(dst, 0o755)
            self._dir_meta[dst] = (self._mode(m), m.mtime)
        elif m.issym():
            os.symlink(m.linkname, dst)
            os.utime(dst, (m.mtime, m.mtime), follow_symlinks=False)
        elif m.islnk():
            os.link(self._link_source(m), dst, follow_symlinks=False)
        elif m.isfifo():
            os.mkfifo(dst, self._mode(m))
            os.utime(dst, (m.mtime, m.mtime), follow_symlinks=False)
        elif m.isreg() or m.type not in tarfile.SUPPORTED_TYPES:
            self._write_file(reader, m, dst)
        else:
            log.warning("%s: skipped entry %r of unsupported type %r", self._what, m.name,
                        m.type)

    def _write_file(self, reader: LayerReader, m: tarfile.TarInfo, dst: str) -> None:
        fd = os.open(dst, _WRITE_FLAGS, 0o600)
        try:
            for chunk in reader.chunks():
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            os.fchmod(fd, self._mode(m))
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)

    def _link_source(self, m: tarfile.TarInfo) -> str:
        parts = self._split(m.linkname, "hardlink target")
        if not parts:
            raise LayerError(f"{self._what}: hardlink {m.name!r} has an empty target")
        parent = self._resolve_dir(parts[:-1], m.name, create=False)
        source = f"{parent}/{parts[-1]}"
        try:
            st = os.lstat(source) if parent is not None else None
        except FileNotFoundError:
            st = None
        if st is None or stat.S_ISDIR(st.st_mode):
            raise LayerError(f"{self._what}: hardlink {m.name!r} -> {m.linkname!r}: the target "
                             "is not an existing file inside the image")
        return source

    def _whiteout(self, parts: list[str], name: str) -> None:
        parent = self._resolve_dir(parts[:-1], name, create=False)
        if parent is None:
            return
        base = parts[-1]
        if base == ".wh..wh..opq":
            for child in os.listdir(parent):
                path = f"{parent}/{child}"
                if path not in self._created:
                    self._remove(path, os.lstat(path))
            return
        if base.startswith(".wh..wh."):
            return  # aufs bookkeeping (.wh..wh.plnk and friends), not a deletion
        target = f"{parent}/{base[4:]}"
        if target in self._created:
            return
        try:
            self._remove(target, os.lstat(target))
        except FileNotFoundError:
            pass

    @staticmethod
    def _remove(path: str, st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)  # never follows symlinks inside
        else:
            os.unlink(path)

    @staticmethod
    def _mode(m: tarfile.TarInfo) -> int:
        return m.mode & 0o7777 & ~(stat.S_ISUID | stat.S_ISGID)
