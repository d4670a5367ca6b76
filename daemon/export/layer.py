"""Write the changes read from an upper dir as one deterministic OCI layer (tar + gzip).

Deterministic so that exporting an unchanged worker twice gives the same digest (and the
registry already has the blob): entries in bytewise path order, numeric owners only (empty
user/group names), PAX headers never carry access/change times, gzip without a name or a
timestamp, one fixed compression level. File mtimes are kept as the sandbox sees them (Python
checks them against its ``.pyc`` caches); unchanged files keep theirs across re-exports.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from daemon.export.upper import Change, Kind

GZIP_LEVEL = 6
PROGRESS_EVERY_S = 0.1
OPAQUE_MARKER = ".wh..wh..opq"
WHITEOUT_PREFIX = ".wh."


@dataclass(frozen=True)
class LayerBlob:
    """A written layer: ``digest`` of the gzip blob, ``diff_id`` of the uncompressed tar."""

    path: Path
    digest: str
    diff_id: str
    size: int
    uncompressed_size: int


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...
    def flush(self) -> None: ...


class _Hashing:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()


def _info(name: str, change: Change) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = change.mode
    info.uid, info.gid = change.uid, change.gid
    info.uname = info.gname = ""
    info.mtime = change.mtime
    return info


def _whiteout(path: str) -> tarfile.TarInfo:
    parent, _, base = path.rpartition("/")
    name = f"{parent}/{WHITEOUT_PREFIX}{base}" if parent else f"{WHITEOUT_PREFIX}{base}"
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    info.uname = info.gname = ""
    return info


def write_layer(changes: list[Change], dest: Path,
                progress: Callable[[int], None] = lambda done: None) -> LayerBlob:
    """Write ``changes`` (sorted, from :func:`daemon.export.upper.read_upper`) to ``dest``.
    ``progress(file bytes written so far)`` after each file, at most every 0.1 s, and at the
    end."""
    done, last = 0, 0.0
    with open(dest, "wb") as raw:
        compressed = _Hashing(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed,
                           compresslevel=GZIP_LEVEL, mtime=0) as gz:
            plain = _Hashing(gz)
            with tarfile.open(fileobj=plain, mode="w|",  # type: ignore[call-overload]
                              format=tarfile.PAX_FORMAT) as tar:
                for change in changes:
                    _add(tar, change)
                    done += change.size
                    if change.size and time.monotonic() - last >= PROGRESS_EVERY_S:
                        progress(done)
                        last = time.monotonic()
    progress(done)
    return LayerBlob(path=dest, digest=f"sha256:{compressed.sha.hexdigest()}",
                     diff_id=f"sha256:{plain.sha.hexdigest()}", size=compressed.size,
                     uncompressed_size=plain.size)


def _add(tar: tarfile.TarFile, change: Change) -> None:
    if change.kind is Kind.WHITEOUT:
        tar.addfile(_whiteout(change.path))
        return
    info = _info(change.path, change)
    if change.kind is Kind.DIR:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        if change.opaque:
            tar.addfile(_whiteout(f"{change.path}/{OPAQUE_MARKER[len(WHITEOUT_PREFIX):]}"))
    elif change.kind is Kind.SYMLINK:
        info.type = tarfile.SYMTYPE
        info.linkname = change.link_target
        tar.addfile(info)
    elif change.kind is Kind.HARDLINK:  # the target is an earlier entry of this layer
        info.type = tarfile.LNKTYPE
        info.linkname = change.link_target
        tar.addfile(info)
    else:
        assert change.source is not None
        info.size = change.size
        with open(change.source, "rb") as f:
            tar.addfile(info, f)
