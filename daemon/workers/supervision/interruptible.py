"""Running one step of a worker's reconciler so that a newer request can interrupt it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["interruptible"]


async def interruptible(wake: asyncio.Event, coro: Awaitable[T], abort: Callable[[], bool]
                        ) -> asyncio.Future[T] | None:
    """Run one step; each time ``wake`` is set (a request arrived) and ``abort()`` says the step
    no longer leads where the worker should go, cancel it (and wait for its clean-up). Returns
    the done step, or None when it was cancelled. Cancelling the caller cancels the step."""
    wake.clear()  # what is asked now is known: only a newer request interrupts
    step = asyncio.ensure_future(coro)
    try:
        while True:
            waker = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait({step, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waker.cancel()
            if step.done():
                return step
            wake.clear()
            if abort():
                step.cancel()
                await asyncio.wait({step})
                return None if step.cancelled() else step
    except asyncio.CancelledError:
        step.cancel()
        await asyncio.wait({step})
        raise
