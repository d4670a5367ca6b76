"""An in-process daemon on a temporary socket (the real server, dispatcher and listener).

    async with InProcessDaemon(home, service) as d:      # in the test's event loop
        reader, writer = await d.connect()

    with ThreadedDaemon(home, service) as d:             # own loop in a thread, for sync clients
        RpcClient(d.socket_path).call("worker.list")
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Self

from daemon.api.server import ServerLimits
from daemon.api.services import AllServices, Services
from daemon.app import serve_daemon
from daemon.config.settings import DaemonSettings, load_settings
from tests.support.wait import async_wait_until, wait_until

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 15.0


def settings_for(home: Path, socket_path: Path | None = None) -> DaemonSettings:
    env = {"III_HOME": str(home), "III_SOCKET": str(socket_path or home / "iii.sock"),
           "III_URL": "ws://127.0.0.1:9"}  # port 9 (discard): the engine is never reachable
    return load_settings(env)


class InProcessDaemon:
    def __init__(self, home: Path, service: AllServices, *,
                 limits: ServerLimits | None = None, keep_workers: bool = False) -> None:
        self.settings = settings_for(home)
        self.socket_path = self.settings.socket_path
        self.service = service
        self._limits = limits
        self._keep_workers = keep_workers
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._clients: list[asyncio.StreamWriter] = []

    async def _factory(self, settings: DaemonSettings, stack: AsyncExitStack) -> Services:
        return Services.of(self.service)

    async def __aenter__(self) -> Self:
        self.task = asyncio.create_task(serve_daemon(
            self.settings, keep_workers=self._keep_workers, service_factory=self._factory,
            stop=self.stop, limits=self._limits))

        async def ready() -> bool:
            if self.task is not None and self.task.done():
                self.task.result()  # start-up failed: raise its error here
            return self.socket_path.exists()

        await async_wait_until(ready, START_TIMEOUT_S, "the daemon socket")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._clients:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, STOP_TIMEOUT_S)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_unix_connection(str(self.socket_path),
                                                            limit=64 * 1024 * 1024)
        self._clients.append(writer)  # closed on exit (filterwarnings=error: no leaks)
        return reader, writer


class ThreadedDaemon:
    """The in-process daemon on its own event loop in a thread (sync clients, CLI tests)."""

    def __init__(self, home: Path, service_factory: Any) -> None:
        self.home = home
        self._service_factory = service_factory  # called inside the daemon's loop
        self.settings = settings_for(home)
        self.socket_path = self.settings.socket_path
        self.service: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.service = self._service_factory()

            async def factory(settings: DaemonSettings, stack: AsyncExitStack) -> Services:
                return Services.of(self.service)

            await serve_daemon(self.settings, service_factory=factory, stop=self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - surfaced by __enter__/__exit__
            self._error = exc

    def call_in_loop(self, fn: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(III_HOME=str(self.home), III_SOCKET=str(self.socket_path),
                   III_NO_AUTOSTART="1")
        return env

    def __enter__(self) -> Self:
        self._thread.start()
        wait_until(lambda: self._error is not None or self.socket_path.exists(),
                   START_TIMEOUT_S, "the daemon socket")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STOP_TIMEOUT_S)
        if self._error is not None:
            raise self._error
