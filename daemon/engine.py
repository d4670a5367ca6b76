"""The iii engine as the daemon sees it (SPEC §10): reachability and ``engine::workers::list``.

- :class:`EngineWatcher` probes ``host:port`` of the engine URL with a TCP connect (200 ms
  timeout) every second and awaits ``on_up`` / ``on_down`` on transitions.
- :func:`list_engine_workers` asks the engine which workers are connected, over the same
  WebSocket protocol the iii SDK speaks (field names checked against ``iii-sdk`` 0.25:
  ``iii/iii_types.py``): the engine first sends ``{"type": "workerregistered", "worker_id": ...}``;
  we send ``{"type": "invokefunction", "invocation_id": <uuid4>, "function_id":
  "engine::workers::list", "data": {}}`` and read ``{"type": "invocationresult",
  "invocation_id": ..., "function_id": ..., "result": {"workers": [{"name", "status", ...}]}}``
  (or ``"error": {"code", "message"}``).

An SDK worker's name on the engine is ``III_WORKER_NAME`` from its environment, else
``InitOptions(worker_name=...)``, else ``<hostname>:<pid>``: the daemon sets ``III_WORKER_NAME`` to
the config.yaml name (SPEC §8), which is what ``engine_registered`` matches on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

import aiohttp
import msgspec

from daemon.errors import InvalidArgument

__all__ = [
    "DEFAULT_ENGINE_URL",
    "ENGINE_CONNECT_TIMEOUT_S",
    "ENGINE_LIST_TIMEOUT_S",
    "ENGINE_POLL_INTERVAL_S",
    "EngineWatcher",
    "EngineWorker",
    "engine_address",
    "engine_url_from_env",
    "list_engine_workers",
]

log = logging.getLogger(__name__)

DEFAULT_ENGINE_URL = "ws://127.0.0.1:49134"
#: Reachable = a TCP connect succeeds within this (SPEC §10).
ENGINE_CONNECT_TIMEOUT_S = 0.2
#: How often the watcher probes (SPEC §10).
ENGINE_POLL_INTERVAL_S = 1.0
#: Whole budget of one ``engine::workers::list`` call: connect, handshake, answer.
ENGINE_LIST_TIMEOUT_S = 3.0

Callback = Callable[[], Awaitable[None]]


class EngineWorker(msgspec.Struct, frozen=True):
    """One worker the engine lists (``status`` is the engine's word, e.g. ``connected``)."""

    name: str
    status: str = "unknown"


class _ListResult(msgspec.Struct):
    workers: list[EngineWorker]


def engine_url_from_env(environ: Mapping[str, str]) -> str:
    """``III_URL`` if set and non-empty, else :data:`DEFAULT_ENGINE_URL`."""
    return environ.get("III_URL") or DEFAULT_ENGINE_URL


def engine_address(url: str) -> tuple[str, int]:
    """(host, port) of a ``ws://`` / ``wss://`` (or http/https) URL; raises InvalidArgument."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument(f"engine URL {url!r} is invalid: {exc}") from exc
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        raise InvalidArgument(
            f"engine URL {url!r} is invalid: expected ws://HOST:PORT (e.g. {DEFAULT_ENGINE_URL})")
    if port is None:
        port = 443 if parts.scheme in ("wss", "https") else 80
    return parts.hostname, port


async def _tcp_reachable(host: str, port: int, timeout: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass  # a reset on close still proves the port answered
    return True


class EngineWatcher:
    """Tracks whether the engine accepts TCP connections.

    ``on_up`` is awaited when the engine becomes reachable (also on the first probe if it already
    is); ``on_down`` when a reachable engine stops answering. Callbacks run inside :meth:`run`, one
    at a time, in order: keep them short (hand long work to your TaskGroup). Until the first probe
    :attr:`reachable` is False and :attr:`down_since` is None.

    Example::

        watcher = EngineWatcher(url, on_up=start_all, on_down=arm_grace_timer)
        tg.create_task(watcher.run())
        await watcher.wait_reachable(True)
    """

    def __init__(self, url: str, *, poll_interval: float = ENGINE_POLL_INTERVAL_S,
                 connect_timeout: float = ENGINE_CONNECT_TIMEOUT_S,
                 on_up: Callback | None = None, on_down: Callback | None = None) -> None:
        self.url = url
        self.host, self.port = engine_address(url)
        self.poll_interval = poll_interval
        self.connect_timeout = connect_timeout
        self.on_up, self.on_down = on_up, on_down
        self._reachable = False
        self._probed = False
        self._down_since: float | None = None
        self._changed = asyncio.Condition()

    @property
    def reachable(self) -> bool:
        """The last probe's answer (False before the first probe)."""
        return self._reachable

    @property
    def down_since(self) -> float | None:
        """``time.monotonic()`` of the probe that first found the engine down (None while up or
        before the first probe)."""
        return self._down_since

    def down_for(self) -> float | None:
        """Seconds the engine has been down, or None while it is up / not yet probed."""
        return None if self._down_since is None else time.monotonic() - self._down_since

    async def probe(self) -> bool:
        """One probe: update the state and await the transition callback, if any."""
        now_up = await _tcp_reachable(self.host, self.port, self.connect_timeout)
        first, was_up = not self._probed, self._reachable
        self._probed = True
        self._reachable = now_up
        if now_up:
            self._down_since = None
        elif was_up or first:
            self._down_since = time.monotonic()
        if now_up != was_up or first:
            async with self._changed:
                self._changed.notify_all()
            if now_up and self.on_up is not None:
                log.info("engine at %s is reachable", self.url)
                await self.on_up()
            elif not now_up and was_up and self.on_down is not None:
                log.warning("engine at %s is unreachable", self.url)
                await self.on_down()
        return now_up

    async def wait_reachable(self, reachable: bool = True) -> None:
        """Return once a probe has found the engine ``reachable`` (or not)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._probed and self._reachable == reachable)

    async def run(self) -> None:
        """Probe forever every ``poll_interval`` seconds; cancel to stop."""
        while True:
            started = time.monotonic()
            await self.probe()
            await asyncio.sleep(max(0.0, self.poll_interval - (time.monotonic() - started)))


async def list_engine_workers(url: str, *, timeout: float = ENGINE_LIST_TIMEOUT_S
                              ) -> list[EngineWorker] | None:
    """The workers the engine lists, or None when the engine cannot be asked (unreachable, no
    answer within ``timeout``, an error answer, or an answer of the wrong shape; logged)."""
    try:
        return await asyncio.wait_for(_ask_workers(url), timeout)
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError,
            msgspec.ValidationError) as exc:
        log.debug("engine::workers::list on %s failed: %s: %s", url, type(exc).__name__, exc)
        return None


async def _ask_workers(url: str) -> list[EngineWorker] | None:
    invocation_id = str(uuid.uuid4())
    request = {"type": "invokefunction", "invocation_id": invocation_id,
               "function_id": "engine::workers::list", "data": {}}
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(url, autoping=True, heartbeat=None,
                               max_msg_size=64 * 1024 * 1024) as ws:
        registered = False
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.ERROR):
                    break
                continue
            data = json.loads(msg.data)
            if not isinstance(data, dict):
                continue
            kind = data.get("type")
            if kind == "workerregistered" and not registered:
                registered = True
                await ws.send_str(json.dumps(request))
            elif kind == "invocationresult" and data.get("invocation_id") == invocation_id:
                if data.get("error"):
                    log.warning("engine::workers::list on %s answered an error: %s",
                                url, data["error"])
                    return None
                return msgspec.convert(data.get("result"), _ListResult).workers
    return None  # closed before answering
