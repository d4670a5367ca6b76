"""Read a layer blob in a background thread: decompress, parse tar headers, hand out members
and their data in order through a bounded queue.

Decompression and header parsing then overlap with the file system work of the extractor
(both release the GIL in zlib/zstd and in syscalls), which is where a pull spends its time.
Items travel in batches (a queue operation per small file would cost more than the file);
the queue holds at most :data:`READ_AHEAD_BATCHES` batches of about :data:`BATCH_BYTES`, so
memory stays bounded (~20 MiB) whatever the layer size.
"""

from __future__ import annotations

import collections
import gzip
import io
import queue
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

import zstandard

from daemon.images.errors import LayerError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK_BYTES = 256 << 10
BATCH_ITEMS = 256
BATCH_BYTES = 1 << 20
READ_AHEAD_BATCHES = 16
_PUT_POLL_S = 0.1

# (member or None for a continuation chunk, data chunk, last chunk of this member)
_Item = tuple[tarfile.TarInfo | None, bytes, bool]


class _Halted(Exception):
    """The consumer went away; the reader thread just ends."""


def open_layer(blob: BinaryIO) -> BinaryIO:
    """A decompressed view of ``blob``, by magic bytes (media types are often mislabelled)."""
    head = blob.read(4)
    blob.seek(0)
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=blob, mode="rb")  # type: ignore[return-value]
    if head == ZSTD_MAGIC:
        return zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True)
    return blob


class _BudgetReader(io.RawIOBase):
    """Counts decompressed bytes against the image-wide byte limit (stops gzip bombs early)."""

    def __init__(self, inner: BinaryIO, owner: LayerReader) -> None:
        self._inner, self._owner = inner, owner

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._owner.count_bytes(len(data))
        return data


class LayerReader:
    """``with LayerReader(blob, what, bytes_so_far, max_bytes) as r: for m in r: ...``.

    For regular files, consume :meth:`chunks` before asking for the next member. Errors of
    the reader thread (corrupt archive, byte limit) are raised in the consumer.
    """

    def __init__(self, blob_path: Path, what: str, bytes_so_far: int, max_bytes: int) -> None:
        self._blob_path, self._what = blob_path, what
        self.bytes, self.max_bytes = bytes_so_far, max_bytes
        self._queue: queue.Queue[list[_Item | BaseException | None]] = queue.Queue(
            READ_AHEAD_BATCHES)
        self._batch: list[_Item | BaseException | None] = []
        self._batch_bytes = 0
        self._received: collections.deque[_Item | BaseException | None] = collections.deque()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"read {what}", daemon=True)
        self._first = b""
        self._more = False

    def count_bytes(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.max_bytes:
            raise LayerError(f"{self._what}: image is larger than the limit of "
                             f"{self.max_bytes} uncompressed bytes")

    # ------------------------------------------------------------------ reader thread

    def _put(self, item: _Item | BaseException | None) -> None:
        self._batch.append(item)
        if item is not None and not isinstance(item, BaseException):
            self._batch_bytes += len(item[1])
            if len(self._batch) < BATCH_ITEMS and self._batch_bytes < BATCH_BYTES:
                return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        while not self._halt.is_set():
            try:
                self._queue.put(batch, timeout=_PUT_POLL_S)
                return
            except queue.Full:
                continue
        raise _Halted

    def _run(self) -> None:
        try:
            with self._blob_path.open("rb") as raw, open_layer(raw) as plain, tarfile.open(
                    fileobj=_BudgetReader(plain, self), mode="r|") as tf:
                while (member := tf.next()) is not None:
                    if member.isreg() or member.type not in tarfile.SUPPORTED_TYPES:
                        self._read_data(tf, member)
                    else:
                        self._put((member, b"", True))
                    # Stream mode would otherwise keep every header (1M entries → GBs).
                    tf.members.clear()  # type: ignore[attr-defined]
            self._put(None)
        except _Halted:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            try:
                self._put(exc)
            except _Halted:
                return

    def _read_data(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if self.bytes + member.size > self.max_bytes:
            self.count_bytes(member.size)  # the limit error before decompressing a bomb
        source = tf.extractfile(member)
        assert source is not None
        remaining = member.size
        first: tarfile.TarInfo | None = member
        while True:
            chunk = source.read(min(CHUNK_BYTES, remaining)) if remaining else b""
            if remaining and not chunk:
                raise tarfile.ReadError(f"unexpected end of data in {member.name!r}")
            remaining -= len(chunk)
            self._put((first, chunk, remaining == 0))
            first = None
            if remaining == 0:
                return

    # ------------------------------------------------------------------ consumer side

    def _get(self) -> _Item | None:
        if not self._received:
            self._received.extend(self._queue.get())
        item = self._received.popleft()
        if isinstance(item, BaseException):
            raise item
        return item

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        while True:
            while self._more:  # data the consumer did not want (e.g. a skipped member)
                self._more = not self._next_chunk()[2]
            item = self._get()
            if item is None:
                return
            member, self._first, last = item
            self._more = not last
            assert member is not None
            yield member

    def _next_chunk(self) -> _Item:
        item = self._get()
        assert item is not None and item[0] is None, "out of step with the reader thread"
        return item

    def chunks(self) -> Iterator[bytes]:
        """The current member's data, chunk by chunk."""
        first, self._first = self._first, b""
        yield first
        while self._more:
            _none, chunk, last = self._next_chunk()
            self._more = not last
            yield chunk

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._halt.set()
        self._thread.join()
