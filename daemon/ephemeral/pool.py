"""The warm pool: per catalog name, ``warm_pool[name]`` sandboxes booted ahead with the default
cpus/memory and no network (``warm_pool_after_use`` for a name without an entry, once it has
been asked for: nothing is pulled or booted for a name nobody uses), handed out by
``sandbox::create`` (their exec env gets the
request's ``env`` at claim time: nothing of a request is baked into a pooled sandbox). The
maintenance loop refills it; a name whose boot fails is retried after ``RETRY_AFTER_S``."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from daemon.ephemeral.boot import SandboxBooter
from daemon.ephemeral.catalog import resolve_image
from daemon.ephemeral.registry import Sandbox
from daemon.errors import DaemonError

__all__ = ["WarmPool"]

log = logging.getLogger("iii.daemon.sandboxes")

RETRY_AFTER_S = 30.0


class WarmPool:
    """Ready sandboxes by catalog name (see the module docstring)."""

    def __init__(self, booter: SandboxBooter) -> None:
        self.booter = booter
        self._ready: dict[str, list[Sandbox]] = {}
        self._failed_at: dict[str, float] = {}
        self.wanted = asyncio.Event()  # set by a claim: refill now, not at the next tick
        self._used: set[str] = set()
        self._dead: list[Sandbox] = []

    def size(self, image: str) -> int:
        return len(self._ready.get(image, []))

    def targets(self) -> dict[str, int]:
        """How many ready sandboxes each catalog name should have now."""
        policy = self.booter.policy
        catalog = policy.images()
        wanted = {name: policy.warm_pool_after_use for name in self._used if name in catalog}
        wanted.update(policy.warm_pool)
        return {name: count for name, count in wanted.items() if count > 0}

    def note_use(self, image: str) -> None:
        """``image`` was asked for: from now on the pool keeps ``warm_pool_after_use`` ready."""
        if image not in self._used:
            self._used.add(image)
            self.wanted.set()

    def claim(self, image: str) -> Sandbox | None:
        """A ready sandbox of ``image`` (its clocks reset), or None. One whose sandbox ended
        while it waited (killed from outside) is set aside for ``fill`` to delete."""
        ready = self._ready.get(image, [])
        while ready:
            sandbox = ready.pop(0)
            self.wanted.set()
            if sandbox.task.alive():
                sandbox.created = sandbox.last_active = time.monotonic()
                return sandbox
            self._dead.append(sandbox)
        return None

    async def fill(self) -> int:
        """Boot what the pool lacks (each name's missing ones at once); returns how many."""
        while self._dead:
            dead = self._dead.pop()
            await self.booter.destroy(dead.layout, dead.task)
        booted = 0
        for image, want in self.targets().items():
            ready = self._ready.setdefault(image, [])
            if time.monotonic() - self._failed_at.get(image, -RETRY_AFTER_S) < RETRY_AFTER_S:
                continue
            results = await asyncio.gather(*(self._boot(image) for _ in range(want - len(ready))),
                                           return_exceptions=True)
            unexpected = None
            for result in results:
                if isinstance(result, Sandbox):
                    ready.append(result)
                    booted += 1
                elif isinstance(result, DaemonError):
                    log.warning("warm pool: cannot boot a %r sandbox: %s", image, result.message)
                    self._failed_at[image] = time.monotonic()
                else:  # a bug: every booted one is pooled (stopped on close), then it surfaces
                    unexpected = result
            if results:
                log.info("warm pool: %d %s sandbox(es) ready", len(ready), image)
            if unexpected is not None:
                raise unexpected
        return booted

    async def _boot(self, image: str) -> Sandbox:
        policy = self.booter.policy
        oci_ref = resolve_image(policy, image)
        cached = await self.booter.image(oci_ref)
        sandbox_id = str(uuid.uuid4())
        booted = await self.booter.boot(sandbox_id, cached, cpus=policy.default_cpus,
                                        memory_mb=policy.default_memory_mb, network=False)
        return Sandbox.from_booted(booted, id=sandbox_id, image=image, oci_ref=oci_ref,
                                   cpus=policy.default_cpus,
                                   memory_mb=policy.default_memory_mb, network=False)

    async def aclose(self) -> None:
        for ready in [*self._ready.values(), self._dead]:
            while ready:
                sandbox = ready.pop()
                await self.booter.destroy(sandbox.layout, sandbox.task)
