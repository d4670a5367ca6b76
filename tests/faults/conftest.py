"""Fixtures for the fault-injection suite: the real daemon process, the session registry, and
:class:`BlobFaultProxy`, a small aiohttp proxy in front of that registry that can hold or cut
blob downloads on demand. The proxy runs on its own event loop in a thread because the daemon
it serves is another process and the tests themselves are mostly synchronous."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.daemon import daemon_factory
from tests.support.engine import engine_factory
from tests.support.registry import RegistryServer

__all__ = ["BlobFaultProxy", "complete_looking", "daemon_factory", "engine_factory", "temp_dirs"]

PROXY_START_TIMEOUT_S = 10.0
PROXY_STOP_TIMEOUT_S = 10.0
HOLD_TIMEOUT_S = 120.0  # a held response gives up by itself if the test never releases it


def complete_looking(home: Path) -> list[str]:
    """Cache dirs a reader would take for a complete image (non-dot dir with ``.oci-digest``)."""
    rootfs = home / "rootfs"
    if not rootfs.is_dir():
        return []
    return sorted(p.name for p in rootfs.iterdir()
                  if not p.name.startswith(".") and (p / ".oci-digest").exists())


def temp_dirs(home: Path) -> list[str]:
    """In-progress (or abandoned) pull work dirs under ``rootfs/``."""
    rootfs = home / "rootfs"
    return sorted(p.name for p in rootfs.glob(".tmp-*")) if rootfs.is_dir() else []


@dataclass
class _Fault:
    path_part: str
    kind: str  # "cut": send a part, then drop; "hold": send a part, wait for release, then drop
    times: int
    fraction: float


class BlobFaultProxy:
    """Forwards everything to ``upstream``; matching requests get a partial body then a drop.

    ``cut(part, times)`` sends ``fraction`` of the body and closes the connection;
    ``hold(part)`` sends ``fraction`` of the body and then stalls until :meth:`release`
    (``holding`` is set meanwhile), then closes. ``faults_injected`` counts both.
    """

    def __init__(self, upstream: RegistryServer) -> None:
        self.upstream = upstream
        self.port = 0
        self.holding = threading.Event()
        self.faults_injected = 0
        self.requests: list[str] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy",
                                        daemon=True)
        self._release: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- fault control (called from the test thread) -------------------------------------------
    def cut(self, path_part: str, times: int, fraction: float = 0.5) -> None:
        with self._lock:
            self._faults.append(_Fault(path_part, "cut", times, fraction))

    def hold(self, path_part: str, fraction: float = 0.5) -> None:
        with self._lock:
            self._faults.append(_Fault(path_part, "hold", 1, fraction))

    def heal(self) -> None:
        """Forget pending faults and let any held response go."""
        with self._lock:
            self._faults.clear()
        self.release()

    def release(self) -> None:
        if self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)

    def seen(self, path_part: str) -> int:
        with self._lock:
            return sum(1 for p in self.requests if path_part in p)

    def _take(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            self.requests.append(f"{method} {path}")
            if method != "GET":
                return None
            for fault in self._faults:
                if fault.path_part in path and fault.times > 0:
                    fault.times -= 1
                    self.faults_injected += 1
                    return fault
        return None

    # -- serving (on the proxy loop) -------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._take(request.method, request.path_qs)
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self._client.request(request.method, f"{self.upstream.url}{request.path_qs}",
                                        headers=headers, data=await request.read(),
                                        allow_redirects=False) as upstream:
            body = await upstream.read()
            passed = {k: v for k, v in upstream.headers.items()
                      if k.lower() not in ("content-length", "transfer-encoding", "connection")}
        if fault is None or request.method != "GET" or upstream.status != 200:
            return web.Response(status=upstream.status, body=body, headers=passed)
        resp = web.StreamResponse(status=upstream.status, headers=passed)
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[: int(len(body) * fault.fraction)])
        if fault.kind == "hold":
            self.holding.set()
            assert self._release is not None
            try:
                await asyncio.wait_for(self._release.wait(), HOLD_TIMEOUT_S)
            except TimeoutError:
                pass
        if request.transport is not None:
            request.transport.abort()
        return resp

    async def _start(self) -> None:
        self._release = asyncio.Event()
        self._client = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _stop(self) -> None:
        assert self._release is not None
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    def _run(self, coro: Any, timeout: float) -> None:
        future: Future[None] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        future.result(timeout)

    def start(self) -> BlobFaultProxy:
        self._thread.start()
        self._run(self._start(), PROXY_START_TIMEOUT_S)
        return self

    def stop(self) -> None:
        try:
            self._run(self._stop(), PROXY_STOP_TIMEOUT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(PROXY_STOP_TIMEOUT_S)
            self._loop.close()


@pytest.fixture
def fault_proxy(registry: RegistryServer) -> Iterator[BlobFaultProxy]:
    """A :class:`BlobFaultProxy` in front of the session registry, stopped at teardown."""
    proxy = BlobFaultProxy(registry).start()
    try:
        yield proxy
    finally:
        proxy.stop()
