"""The one way tests wait: on a condition, with a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL_S = 0.02


def wait_until(condition: Callable[[], T], timeout: float, what: str = "condition") -> T:
    """Poll ``condition`` until it returns a truthy value; return it, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


async def async_wait_until(
    condition: Callable[[], Awaitable[T]], timeout: float, what: str = "condition"
) -> T:
    """Async twin of :func:`wait_until` for conditions that must await."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL_S)


def socket_answers(path: Path) -> bool:
    """Whether something accepts connections on the Unix socket at ``path`` (a wait condition)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
