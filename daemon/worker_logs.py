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


async def follow(log: Path, on_line: Callable[[str], Awaitable[None]]) -> None:
    """Send every line appended to ``log`` to ``on_line`` until cancelled; survives rotation."""
    f = None
    inode = None
    buf = b""
    try:
        while True:
            if f is None and log.exists():
                f = open(log, "rb")
                f.seek(0, os.SEEK_END)
                inode = os.fstat(f.fileno()).st_ino
            if f is not None:
                chunk = f.read(_CHUNK)
                if chunk:
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        await on_line(line.decode("utf-8", "replace"))
                    continue
                try:
                    rotated = os.stat(log).st_ino != inode
                except FileNotFoundError:
                    rotated = True
                if rotated:  # the writer moved on to a new file: read it from the start
                    f.close()
                    f = open(log, "rb") if log.exists() else None
                    inode = os.fstat(f.fileno()).st_ino if f else None
                    continue
            await asyncio.sleep(FOLLOW_POLL_S)
    finally:
        if f is not None:
            f.close()


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
