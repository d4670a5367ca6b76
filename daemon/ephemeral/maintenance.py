"""The sandbox service's background loop (the sweep of what a previous daemon left runs before it,
in ``daemon.app``):
every ``TICK_S`` reap idle sandboxes and refill the warm pool (at once after a claim)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from daemon.ephemeral.service import SandboxService

__all__ = ["TICK_S", "maintain"]

log = logging.getLogger("iii.daemon.sandboxes")

TICK_S = 1.0  # idle timeouts are whole seconds; upstream's reaper ticks every 10 s


async def maintain(service: SandboxService, *, tick_s: float = TICK_S) -> None:
    """Run until cancelled (the daemon's background tasks own it)."""
    while True:
        try:
            await service.reap_idle()
            service.pool.wanted.clear()
            await service.pool.fill()
        except Exception:  # a bug must not end reaping for the daemon's lifetime
            log.exception("sandbox maintenance failed; trying again next tick")
        with contextlib.suppress(TimeoutError):  # a claim wakes us early
            await asyncio.wait_for(service.pool.wanted.wait(), tick_s)
