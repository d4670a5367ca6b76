"""The daemon's one long-lived session with the iii engine (SPEC §10).

Every WebSocket connection is a worker in the engine's eyes (it greets each one with
``{"type": "workerregistered", "worker_id": ...}``), so the daemon holds exactly **one**
connection, opened as soon as the engine answers and kept open:

- :class:`EngineSession` ``run()`` loops: a TCP probe every :data:`ENGINE_PROBE_INTERVAL_S` while
  the engine is down (a refused TCP connect is no worker, so it leaves no ghost), then the
  WebSocket handshake; a handshake that fails, or a session that ends within
  :data:`ENGINE_STABLE_S`, makes the next try wait a capped exponential backoff with jitter
  (:data:`ENGINE_RETRY_FIRST_S` doubling up to :data:`ENGINE_RETRY_MAX_S`). A session that lived
  resets the backoff, so an engine restart costs exactly one reconnect.
- The session identifies itself with the void call ``engine::workers::register`` (name
  :data:`DAEMON_WORKER_NAME`, pid, version, runtime ``python``), registers the functions it
  serves (``registerfunction``) and trigger types (``registertriggertype``), and keeps WebSocket
  pings going (aiohttp heartbeat: no pong within half of :data:`ENGINE_HEARTBEAT_S` closes it).
- Reachable = the session is open. ``on_up`` / ``on_down`` are awaited on transitions.
- :meth:`EngineSession.call` sends ``invokefunction`` over the session and awaits the matching
  ``invocationresult`` (field names as in ``iii-sdk`` 0.25 ``iii/iii_types.py``).
- An ``invokefunction`` from the engine runs the registered :data:`Handler` (one task per call,
  owned by the session) and is answered with ``invocationresult`` (``result`` or ``error``
  ``{code, message}``); a call without ``invocation_id`` is void and gets no answer.
- ``registertrigger`` / ``unregistertrigger`` for one of our trigger types go to the
  :class:`TriggerProvider`; ``registertrigger`` is answered with ``triggerregistrationresult``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp

from daemon.engine.address import (
    DEFAULT_ENGINE_URL,
    engine_address,
    engine_url_from_env,
    tcp_reachable,
)
from daemon.engine.calls import (
    Callback,
    EngineCallFailed,
    EngineWorker,
    FunctionError,
    Handler,
    TriggerProvider,
)
from daemon.engine.serving import (
    DAEMON_WORKER_NAME,
    answer,
    register_trigger,
    registration,
    send,
    send_quietly,
)

# The session's public surface, including what it re-exports from address, calls, serving.
__all__ = [
    "DAEMON_WORKER_NAME",
    "DEFAULT_ENGINE_URL",
    "ENGINE_CALL_TIMEOUT_S",
    "EngineCallFailed",
    "EngineSession",
    "EngineWorker",
    "FunctionError",
    "Handler",
    "TriggerProvider",
    "engine_address",
    "engine_url_from_env",
]

log = logging.getLogger("iii.daemon.engine")

#: While the engine is down, a TCP probe this often (SPEC §10: notice an engine within 1 s).
ENGINE_PROBE_INTERVAL_S = 0.25
#: WebSocket upgrade plus the engine's ``workerregistered`` greeting.
ENGINE_HANDSHAKE_TIMEOUT_S = 2.0
#: Backoff after a failed try: first delay, doubling up to the cap (SPEC §10: ≤ 5 s).
ENGINE_RETRY_FIRST_S = 0.25
ENGINE_RETRY_MAX_S = 5.0
#: A session that ends sooner than this counts as a failed try (no reconnect storm against an
#: engine that accepts and drops us at once).
ENGINE_STABLE_S = 2.0
#: WebSocket ping interval; a pong missing for half of it closes the session.
ENGINE_HEARTBEAT_S = 10.0
#: Default budget of one :meth:`EngineSession.call`.
ENGINE_CALL_TIMEOUT_S = 3.0
#: How long closing waits for the engine's close frame.
ENGINE_CLOSE_TIMEOUT_S = 1.0
#: The engine's messages may be large (the SDK declares 64 MiB).
ENGINE_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

class _HandshakeFailed(Exception):
    """The engine answered TCP but did not complete the WebSocket handshake and greeting."""


class EngineSession:
    """The daemon's one session with the engine; run :meth:`run` in a TaskGroup, cancel to close.

    Example::

        session = EngineSession(url, version="1.0", on_up=start_all, on_down=arm_grace)
        tg.create_task(session.run())
        await session.wait_reachable(True)
        workers = await session.call("engine::workers::list", {})
    """

    def __init__(self, url: str, *, version: str, on_up: Callback | None = None,
                 on_down: Callback | None = None,
                 functions: Mapping[str, Handler] | None = None,
                 triggers: TriggerProvider | None = None,
                 probe_interval: float = ENGINE_PROBE_INTERVAL_S,
                 handshake_timeout: float = ENGINE_HANDSHAKE_TIMEOUT_S,
                 retry_max: float = ENGINE_RETRY_MAX_S,
                 heartbeat: float = ENGINE_HEARTBEAT_S) -> None:
        self.url = url
        self.host, self.port = engine_address(url)
        self.version = version
        self.on_up, self.on_down = on_up, on_down
        self.functions: dict[str, Handler] = dict(functions or {})
        self.triggers = triggers
        self.probe_interval = probe_interval
        self.handshake_timeout = handshake_timeout
        self.retry_max = retry_max
        self.heartbeat = heartbeat
        self.sessions_opened = 0  #: WebSocket sessions opened so far (each one a connection)
        self.worker_id: str | None = None  #: what the engine calls us in this session
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._probed = False
        self._down_since: float | None = None
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._changed = asyncio.Condition()
        self._random = random.Random()
        self._calls: asyncio.TaskGroup | None = None

    def listen(self, *, on_up: Callback, on_down: Callback) -> None:
        """Await ``on_up`` when a session opens and ``on_down`` when it ends."""
        self.on_up, self.on_down = on_up, on_down

    def serve(self, functions: Mapping[str, Handler], triggers: TriggerProvider | None) -> None:
        """Register ``functions`` and ``triggers``' trigger types with every session opened."""
        self.functions.update(functions)
        self.triggers = triggers

    # -- state -------------------------------------------------------------------------------

    @property
    def reachable(self) -> bool:
        """True while the session is open (SPEC §10)."""
        return self._ws is not None

    @property
    def down_since(self) -> float | None:
        """``time.monotonic()`` when the session dropped, or when the first try found the engine
        down; None while the session is open and before the first try."""
        return self._down_since

    def down_for(self) -> float | None:
        """Seconds since :attr:`down_since`, or None."""
        return None if self._down_since is None else time.monotonic() - self._down_since

    async def wait_reachable(self, reachable: bool = True) -> None:
        """Return once the session is open (or, with False, known to be closed)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._probed and self.reachable == reachable)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- the loop ------------------------------------------------------------------------------

    def retry_delay(self, failures: int) -> float:
        """Backoff before try ``failures + 1``: capped exponential, jittered to 50-100 %."""
        base: float = min(self.retry_max, ENGINE_RETRY_FIRST_S * 2.0 ** max(0, failures - 1))
        return base * self._random.uniform(0.5, 1.0)

    async def run(self) -> None:
        """Keep one session open for as long as this runs; cancel to close it."""
        failures = 0
        outage_logged = False
        # Calls the engine makes to us outlive the session they came on (their answer is then
        # dropped): a long worker::add never holds up a reconnect.
        async with asyncio.TaskGroup() as self._calls:
            while True:
                if failures:
                    await asyncio.sleep(self.retry_delay(failures))
                await self._wait_for_tcp()
                opened_at = time.monotonic()
                try:
                    await self._session()
                except _HandshakeFailed as exc:
                    failures += 1
                    await self._mark_down()
                    if not outage_logged:
                        log.warning("engine at %s accepts connections but no session opens: "
                                    "%s (retrying with backoff)", self.url, exc)
                        outage_logged = True
                    continue
                outage_logged = False
                lived = time.monotonic() - opened_at
                failures = 0 if lived >= ENGINE_STABLE_S else failures + 1

    async def _mark_down(self) -> None:
        """Not connected: start the outage clock if it is not running yet."""
        if self._down_since is None:
            self._down_since = time.monotonic()
        if not self._probed:
            self._probed = True
            await self._notify()

    async def _wait_for_tcp(self) -> None:
        while not await tcp_reachable(self.host, self.port):
            await self._mark_down()
            await asyncio.sleep(self.probe_interval)

    async def _session(self) -> None:
        async with aiohttp.ClientSession() as http:
            try:
                async with asyncio.timeout(self.handshake_timeout):
                    ws = await http.ws_connect(
                        self.url, heartbeat=self.heartbeat, autoping=True,
                        max_msg_size=ENGINE_MAX_MESSAGE_BYTES,
                        timeout=aiohttp.ClientWSTimeout(ws_close=ENGINE_CLOSE_TIMEOUT_S))
                    try:
                        self.worker_id = await self._greeting(ws)
                    except BaseException:
                        await ws.close()
                        raise
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                raise _HandshakeFailed(f"{type(exc).__name__}: {exc}" if str(exc)
                                       else type(exc).__name__) from exc
            self.sessions_opened += 1
            try:
                await self._serve(ws)
            finally:
                await ws.close()
                await self._closed()

    @staticmethod
    async def _greeting(ws: aiohttp.ClientWebSocketResponse) -> str:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ValueError(f"the engine closed before greeting ({msg.type.name})")
        data = json.loads(msg.data)
        if not isinstance(data, dict) or data.get("type") != "workerregistered":
            raise ValueError("the engine's first message is not workerregistered")
        return str(data.get("worker_id", ""))

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        for message in registration(self.version, self.functions, self.triggers):
            await send(ws, message)
        self._ws = ws
        self._probed = True
        self._down_since = None
        await self._notify()
        log.info("engine session open at %s (worker id %s)", self.url, self.worker_id)
        await self._callback(self.on_up)
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(data, dict):
                self._dispatch(ws, data)

    @staticmethod
    async def _callback(callback: Callback | None) -> None:
        if callback is None:
            return
        try:
            await callback()
        except Exception:  # a callback's bug must not end the session loop
            log.exception("engine session callback %s failed", callback)

    async def _closed(self) -> None:
        was_open = self._ws is not None
        self._ws = None
        self.worker_id = None
        if was_open:
            self._down_since = time.monotonic()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(EngineCallFailed("unavailable",
                                                      "the engine session closed"))
        await self._notify()
        if was_open:
            log.warning("engine session at %s closed", self.url)
            await self._callback(self.on_down)

    # -- messages ------------------------------------------------------------------------------

    def _dispatch(self, ws: aiohttp.ClientWebSocketResponse, data: dict[str, Any]) -> None:
        calls = self._calls
        assert calls is not None  # set by run(), which is the only way a session opens
        kind = data.get("type")
        if kind == "invocationresult":
            future = self._pending.get(str(data.get("invocation_id")))
            if future is not None and not future.done():
                error = data.get("error")
                if error:
                    code = error.get("code", "error") if isinstance(error, dict) else "error"
                    text = error.get("message", "") if isinstance(error, dict) else str(error)
                    future.set_exception(EngineCallFailed(str(code), str(text)))
                else:
                    future.set_result(data.get("result"))
        elif kind == "invokefunction":
            calls.create_task(answer(ws, self.functions, data))
        elif kind == "registertrigger":
            calls.create_task(register_trigger(ws, self.triggers, data))
        elif kind == "unregistertrigger" and self.triggers is not None:
            self.triggers.unregister_trigger(str(data.get("id")))
        elif kind == "ping":
            calls.create_task(send_quietly(ws, {"type": "pong"}))
        elif kind == "registrationrejected":  # e.g. another worker already serves worker::list
            log.warning("the engine refused a registration of ours: %s %s (function %s, owner "
                        "%s)", data.get("code"), data.get("namespace", ""),
                        data.get("function_id", ""), data.get("owner_worker_id", ""))

    # -- calls ---------------------------------------------------------------------------------

    async def call(self, function_id: str, data: Any, *,
                   timeout: float = ENGINE_CALL_TIMEOUT_S) -> Any:
        """Invoke ``function_id`` through the engine and return its result.

        Raises :class:`EngineCallFailed` (no session, session closed, timeout, error answer)."""
        ws = self._ws
        if ws is None:
            raise EngineCallFailed("unavailable", f"no session with the engine at {self.url}")
        invocation_id = str(uuid.uuid4())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[invocation_id] = future
        try:
            await send(ws, {"type": "invokefunction", "invocation_id": invocation_id,
                                  "function_id": function_id, "data": data})
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise EngineCallFailed("timeout", f"{function_id} did not answer within "
                                              f"{timeout:g}s") from None
        except (ConnectionError, RuntimeError) as exc:
            raise EngineCallFailed("unavailable", f"the engine session closed: {exc}") from exc
        finally:
            self._pending.pop(invocation_id, None)

    async def fire(self, function_id: str, data: Any) -> bool:
        """A void ``invokefunction`` (a trigger firing): no answer expected. False when there is
        no session or the send failed."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await send(ws, {"type": "invokefunction", "function_id": function_id,
                                  "data": data, "action": {"type": "void"}})
        except (ConnectionError, RuntimeError) as exc:
            log.debug("firing %s failed: %s", function_id, exc)
            return False
        return True
