"""Reading worker logs: ``tail`` across rotated files and ``follow`` of a growing log."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

FOLLOW_POLL_S = 0.2
_CHUNK = 64 * 1024


def rotated_files(log: Path, keep: int) -> list[Path]:
    """The log and its rotations, oldest first: ``worker.log.3 … worker.log.1, worker.log``."""
    older = [log.with_name(f"{log.name}.{i}") for i in range(keep, 0, -1)]
    return [p for p in [*older, log] if p.exists()]


def _last_lines(path: Path, n: int) -> list[str]:
    """The last ``n`` lines of one file, read backwards in chunks (logs can be large)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        pos, data = f.tell(), b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(_CHUNK, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-n:] if n else []


def tail(log: Path, n: int, keep: int = 3) -> list[str]:
    """The last ``n`` lines of a worker's log, continuing into rotated files when needed."""
    out: list[str] = []
    for path in reversed(rotated_files(log, keep)):
        if len(out) >= n:
            break
        out = _last_lines(path, n - len(out)) + out
    return out


class LogFollower:
    """Reads what was appended to a log since the last poll; copes with copy-truncate
    rotation (the file shrinks: read it again from the start) and with a replaced file."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.pos: int | None = None  # None: start at the end of the file as it is now
        self.inode: int | None = None
        self.buf = b""

    def poll(self) -> list[str]:
        try:
            st = os.stat(self.log)
        except FileNotFoundError:
            return []
        if self.pos is None:
            self.pos, self.inode = st.st_size, st.st_ino
        elif st.st_ino != self.inode or st.st_size < self.pos:
            self.pos, self.inode, self.buf = 0, st.st_ino, b""
        if st.st_size == self.pos:
            return []
        with open(self.log, "rb") as f:
            f.seek(self.pos)
            chunk = f.read(_CHUNK)
        self.pos += len(chunk)
        *lines, self.buf = (self.buf + chunk).split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines]


async def follow(log: Path, on_line: Callable[[str], Awaitable[None]]) -> None:
    """Send every line appended to ``log`` to ``on_line`` until cancelled; survives rotation."""
    follower = LogFollower(log)
    while True:
        lines = await asyncio.to_thread(follower.poll)
        for line in lines:
            await on_line(line)
        if not lines:
            await asyncio.sleep(FOLLOW_POLL_S)


def rotate_if_needed(log: Path, max_bytes: int, keep: int) -> bool:
    """Copy-truncate rotation (SPEC §9: 10 MiB, 3 kept): ``worker.log`` → ``worker.log.1`` …

    The launcher appends with ``O_APPEND``, so truncating in place is safe for the writer; a few
    lines written between the copy and the truncate may be lost, as with logrotate's copytruncate.
    """
    try:
        if log.stat().st_size < max_bytes:
            return False
    except FileNotFoundError:
        return False
    for i in range(keep - 1, 0, -1):
        older = log.with_name(f"{log.name}.{i}")
        if older.exists():
            os.replace(older, log.with_name(f"{log.name}.{i + 1}"))
    first = log.with_name(f"{log.name}.1")
    tmp = log.with_name(f".{log.name}.1.tmp")
    with open(log, "rb") as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
        os.truncate(log, 0)
    os.replace(tmp, first)
    return True
