"""The sandbox service's background loop: at start, sweep what a previous daemon left; then
every ``TICK_S`` reap idle sandboxes and refill the warm pool."""

from __future__ import annotations

import asyncio
import logging

from daemon.ephemeral.service import SandboxService

__all__ = ["TICK_S", "maintain"]

log = logging.getLogger("iii.daemon.sandboxes")

TICK_S = 1.0  # idle timeouts are whole seconds; upstream's reaper ticks every 10 s


async def maintain(service: SandboxService, *, tick_s: float = TICK_S) -> None:
    """Run until cancelled (the daemon's background tasks own it)."""
    while True:
        await service.reap_idle()
        await service.pool.fill()
        await asyncio.sleep(tick_s)
