"""The stand-in iii engine of TESTING.md: a small aiohttp WebSocket server speaking enough of the
real engine protocol for the real ``iii-sdk`` (checked against iii-sdk 0.25's ``iii/iii.py``).

It is a real part the e2e tests run, not a mock of our code:

- ``/`` (and any other path but ``/otel``): on connect it sends
  ``{"type": "workerregistered", "worker_id": <uuid>}``; it stores ``registerfunction`` (and
  honours ``unregisterfunction``); an ``invokefunction`` goes to the connection that registered
  the function, and the ``invocationresult`` goes back to the caller (matched by
  ``invocation_id``; an unknown function, or its worker disconnecting mid-call, is answered with
  an ``error``). A call without ``invocation_id`` (the SDK's void action) gets no answer.
- ``engine::workers::register`` (the SDK's void call at connect; data has ``name``, ``pid``,
  ``runtime``, ...) registers the connection as a worker; ``engine::workers::list`` answers
  ``{"workers": [{"name", "status": "connected", "pid", "runtime", "worker_id"}]}`` for the
  registered, still connected ones.
- ``/otel`` (the SDK's telemetry socket) is accepted and everything on it ignored.
- WebSocket pings are answered (aiohttp autoping) and so is a JSON ``{"type": "ping"}``;
  unknown message types and non-JSON frames are ignored.
- Triggers as the SDK exposes them: ``registertriggertype`` makes the connection the provider of
  that type; a worker's ``registertrigger`` is forwarded to the provider, whose
  ``triggerregistrationresult`` goes back to the worker (an unknown type is answered with an
  error); ``unregistertrigger`` (or the worker leaving) is forwarded to the provider. The
  provider fires a trigger with a plain ``invokefunction``, routed like any other.
- It counts: ``GET /_standin/stats`` (and :meth:`StandInEngine.stats`) answers
  ``{"connections_opened", "open": [{"worker_id", "name"}], "list_calls"}``, so tests can see
  every connection a client opens (each one a worker in the engine's eyes).
- Faults on demand: ``POST /_standin/fault?list=ok|error|garbage|silent`` (or ``--list-answer``)
  makes ``engine::workers::list`` answer normally, with an error, with a result of the wrong
  shape, or not at all.

Three ways to run it:

- in the test's event loop: ``async with StandInEngine() as engine: engine.url``;
- as a process: ``python -m tests.support.engine --port N`` (prints ``listening on ws://...``),
  through the :func:`engine_factory` fixture (start, stop, restart on the same port);
- as a caller: :func:`invoke` sends one ``invokefunction`` and returns its result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiohttp
import pytest
from aiohttp import web

READY_PREFIX = "listening on "
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
INVOKE_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 1.0
STATS_TIMEOUT_S = 5.0
LIST_ANSWERS = ("ok", "error", "garbage", "silent")


@dataclass
class _Connection:
    worker_id: str
    ws: web.WebSocketResponse
    registration: dict[str, Any] | None = None
    functions: set[str] = field(default_factory=set)
    trigger_types: set[str] = field(default_factory=set)


class StandInEngine:
    """The stand-in engine inside the current event loop. ``port=0`` picks a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, list_answer: str = "ok") -> None:
        self.host, self.port = host, port
        self.list_answer = list_answer  # ok | error | garbage | silent
        self.connections_opened = 0
        self.list_calls = 0
        self._trigger_types: dict[str, str] = {}  # trigger type -> provider worker_id
        self._triggers: dict[str, tuple[str, str]] = {}  # trigger id -> (registrant, provider)
        self._connections: dict[str, _Connection] = {}
        self._functions: dict[str, str] = {}  # function_id -> worker_id
        self._pending: dict[str, tuple[str, str]] = {}  # invocation_id -> (caller, callee)
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()  # engine and /otel, closed on stop

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def registered_workers(self) -> list[dict[str, Any]]:
        """What ``engine::workers::list`` answers right now."""
        out = []
        for conn in self._connections.values():
            reg = conn.registration
            if reg is not None:
                out.append({"name": reg.get("name"), "status": "connected",
                            "pid": reg.get("pid"), "runtime": reg.get("runtime"),
                            "worker_id": conn.worker_id})
        return out

    def stats(self) -> dict[str, Any]:
        """Connections opened since start, those open now, ``engine::workers::list`` calls."""
        return {"connections_opened": self.connections_opened,
                "open": [{"worker_id": c.worker_id,
                          "name": (c.registration or {}).get("name")}
                         for c in self._connections.values()],
                "list_calls": self.list_calls}

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _fault(self, request: web.Request) -> web.Response:
        answer = request.query.get("list", "ok")
        if answer not in LIST_ANSWERS:
            return web.json_response({"error": f"list must be one of {LIST_ANSWERS}"},
                                     status=400)
        self.list_answer = answer
        return web.json_response({"list": answer})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/otel", self._otel)
        app.router.add_get("/_standin/stats", self._stats)
        app.router.add_post("/_standin/fault", self._fault)
        app.router.add_get("/{tail:.*}", self._engine)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        # reuse_address: a restarted engine binds the same port at once (TIME_WAIT).
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Close every connection (as an engine going away would), then the listener."""
        await asyncio.gather(*(ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
                               for ws in list(self._sockets)), return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _accept(self, request: web.Request) -> web.WebSocketResponse:
        # timeout: how long close() waits for the peer's close frame when the engine stops.
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0, timeout=CLOSE_TIMEOUT_S)
        await ws.prepare(request)
        self._sockets.add(ws)
        return ws

    async def _otel(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._accept(request)
        try:
            async for _ in ws:
                pass  # telemetry is accepted and dropped
        finally:
            self._sockets.discard(ws)
        return ws

    async def _engine(self, request: web.Request) -> web.WebSocketResponse:
        ws = await self._accept(request)
        conn = _Connection(str(uuid.uuid4()), ws)
        self._connections[conn.worker_id] = conn
        self.connections_opened += 1
        try:
            await ws.send_json({"type": "workerregistered", "worker_id": conn.worker_id})
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(data, dict):
                    await self._handle(conn, data)
        finally:
            self._sockets.discard(ws)
            await self._disconnect(conn)
        return ws

    async def _send(self, worker_id: str, data: dict[str, Any]) -> None:
        conn = self._connections.get(worker_id)
        if conn is not None and not conn.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await conn.ws.send_json(data)

    async def _answer(self, conn: _Connection, data: dict[str, Any], *, result: Any = None,
                      error: dict[str, str] | None = None) -> None:
        invocation_id = data.get("invocation_id")
        if not invocation_id:
            return  # a void call expects nothing back
        reply: dict[str, Any] = {"type": "invocationresult", "invocation_id": invocation_id,
                                 "function_id": data.get("function_id", "")}
        if error is not None:
            reply["error"] = error
        else:
            reply["result"] = result
        await self._send(conn.worker_id, reply)

    async def _handle(self, conn: _Connection, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "ping":
            await self._send(conn.worker_id, {"type": "pong"})
        elif kind == "registerfunction" and isinstance(data.get("id"), str):
            self._functions[data["id"]] = conn.worker_id
            conn.functions.add(data["id"])
        elif kind == "unregisterfunction" and isinstance(data.get("id"), str):
            if self._functions.get(data["id"]) == conn.worker_id:
                del self._functions[data["id"]]
            conn.functions.discard(data["id"])
        elif kind == "invokefunction":
            await self._invoke(conn, data)
        elif kind == "invocationresult":
            pending = self._pending.pop(str(data.get("invocation_id")), None)
            if pending is not None:
                await self._send(pending[0], data)
        elif kind == "registertriggertype" and isinstance(data.get("id"), str):
            self._trigger_types[data["id"]] = conn.worker_id
            conn.trigger_types.add(data["id"])
        elif kind == "registertrigger" and isinstance(data.get("id"), str):
            await self._register_trigger(conn, data)
        elif kind == "triggerregistrationresult":
            trigger = self._triggers.get(str(data.get("id")))
            if trigger is not None:
                if data.get("error"):
                    del self._triggers[str(data.get("id"))]
                await self._send(trigger[0], data)
        elif kind == "unregistertrigger":
            trigger = self._triggers.pop(str(data.get("id")), None)
            if trigger is not None:
                await self._send(trigger[1], data)
        # anything else (reattach, observe, ...) is ignored

    async def _register_trigger(self, conn: _Connection, data: dict[str, Any]) -> None:
        provider = self._trigger_types.get(str(data.get("trigger_type")))
        if provider is None:
            await self._send(conn.worker_id, {
                "type": "triggerregistrationresult", "id": data["id"],
                "trigger_type": data.get("trigger_type"), "function_id": data.get("function_id"),
                "error": {"code": "trigger_type_not_found",
                          "message": f"Trigger type '{data.get('trigger_type')}' not found"}})
            return
        self._triggers[data["id"]] = (conn.worker_id, provider)
        await self._send(provider, data)

    async def _invoke(self, conn: _Connection, data: dict[str, Any]) -> None:
        function_id = data.get("function_id")
        if function_id == "engine::workers::register":
            payload = data.get("data")
            conn.registration = payload if isinstance(payload, dict) else {}
            await self._answer(conn, data, result=None)
        elif function_id == "engine::workers::list":
            self.list_calls += 1
            if self.list_answer == "error":
                await self._answer(conn, data, error={"code": "internal",
                                                      "message": "the roster is on fire"})
            elif self.list_answer == "garbage":
                await self._answer(conn, data, result={"workers": "not-a-list"})
            elif self.list_answer == "ok":
                await self._answer(conn, data, result={"workers": self.registered_workers()})
            # silent: never answers
        elif isinstance(function_id, str) and function_id in self._functions:
            callee = self._functions[function_id]
            if data.get("invocation_id"):
                self._pending[str(data["invocation_id"])] = (conn.worker_id, callee)
            await self._send(callee, data)
        else:
            await self._answer(conn, data, error={
                "code": "function_not_found", "message": f"Function '{function_id}' not found"})

    async def _disconnect(self, conn: _Connection) -> None:
        self._connections.pop(conn.worker_id, None)
        for function_id in conn.functions:
            if self._functions.get(function_id) == conn.worker_id:
                del self._functions[function_id]
        for type_id in conn.trigger_types:
            if self._trigger_types.get(type_id) == conn.worker_id:
                del self._trigger_types[type_id]
        for trigger_id, (registrant, provider) in list(self._triggers.items()):
            if provider == conn.worker_id:
                del self._triggers[trigger_id]
            elif registrant == conn.worker_id:
                del self._triggers[trigger_id]
                await self._send(provider, {"type": "unregistertrigger", "id": trigger_id})
        for invocation_id, (caller, callee) in list(self._pending.items()):
            if callee == conn.worker_id:
                del self._pending[invocation_id]
                await self._send(caller, {
                    "type": "invocationresult", "invocation_id": invocation_id,
                    "function_id": "", "error": {"code": "worker_disconnected",
                                                 "message": "the worker disconnected"}})
            elif caller == conn.worker_id:
                del self._pending[invocation_id]


class InvocationFailed(Exception):
    """An ``invokefunction`` answered with an ``error`` (``code``, ``message``)."""

    def __init__(self, error: Any) -> None:
        super().__init__(f"invocation failed: {error}")
        self.error = error


async def invoke(url: str, function_id: str, data: Any, *,
                 timeout: float = INVOKE_TIMEOUT_S) -> Any:
    """Call ``function_id`` through the engine at ``url`` as a caller connection; return its
    ``result``. Raises InvocationFailed on an ``error`` answer, TimeoutError past ``timeout``."""
    invocation_id = str(uuid.uuid4())
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as session, \
            session.ws_connect(url) as ws:
        await ws.send_json({"type": "invokefunction", "invocation_id": invocation_id,
                            "function_id": function_id, "data": data})
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            reply = json.loads(msg.data)
            if reply.get("type") == "invocationresult" and \
                    reply.get("invocation_id") == invocation_id:
                if reply.get("error"):
                    raise InvocationFailed(reply["error"])
                return reply.get("result")
    raise ConnectionError(f"engine at {url} closed before answering {function_id}")


def invoke_blocking(url: str, function_id: str, data: Any, *,
                    timeout: float = INVOKE_TIMEOUT_S) -> Any:
    """:func:`invoke` for code outside an event loop (sync tests, ``make demo``)."""
    return asyncio.run(invoke(url, function_id, data, timeout=timeout))


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EngineProcess:
    """``python -m tests.support.engine`` as a child process on a fixed port (restartable)."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> EngineProcess:
        if self.running:
            return self
        root = Path(__file__).resolve().parents[2]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]))
        stderr = open(self.log_path, "a") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.engine", "--port", str(self.port)],
                stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=root, env=env)
        finally:
            if self.log_path:
                stderr.close()  # type: ignore[union-attr]
        assert self.proc.stdout is not None
        line = _readline_with_deadline(self.proc, START_TIMEOUT_S)
        if not line.startswith(READY_PREFIX):
            self.stop()
            raise RuntimeError(f"stand-in engine did not start on port {self.port}: {line!r}"
                               f" (log: {self.log_path})")
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; always reaped."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def restart(self) -> EngineProcess:
        self.stop()
        return self.start()

    def kill(self) -> None:
        """SIGKILL (an engine that dies mid-session: nothing is closed cleanly); reaped."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def _http(self, method: str, path: str) -> Any:
        import urllib.request

        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with urllib.request.urlopen(request, timeout=STATS_TIMEOUT_S) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        """The running engine's :meth:`StandInEngine.stats` (counts since this start)."""
        result: dict[str, Any] = self._http("GET", "/_standin/stats")
        return result

    def set_list_answer(self, answer: str) -> None:
        """``engine::workers::list`` answers: ok | error | garbage | silent."""
        self._http("POST", f"/_standin/fault?list={answer}")


def _readline_with_deadline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    result: list[str] = []

    def read() -> None:
        result.append(proc.stdout.readline() if proc.stdout else "")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0].strip() if result else ""


class EngineFactory:
    """Starts :class:`EngineProcess` es and stops and reaps all of them on close.

    ``factory(port=None) -> EngineProcess`` (started; logs in ``log_dir/engine-N.log``)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.made: list[EngineProcess] = []

    def __call__(self, port: int | None = None) -> EngineProcess:
        engine = EngineProcess(port, log_path=self.log_dir / f"engine-{len(self.made)}.log")
        self.made.append(engine)
        return engine.start()

    def close(self) -> None:
        for engine in self.made:
            engine.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def engine_factory(tmp_path: Path) -> Iterator[EngineFactory]:
    """Factory fixture over :class:`EngineFactory`; a conftest can re-export it."""
    with EngineFactory(tmp_path) as factory:
        yield factory


async def _serve(host: str, port: int, list_answer: str = "ok") -> None:
    engine = StandInEngine(host, port, list_answer)
    await engine.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"{READY_PREFIX}{engine.url}", flush=True)
    await stop.wait()
    await engine.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.engine",
                                     description="The stand-in iii engine (TESTING.md).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=49134)
    parser.add_argument("--list-answer", choices=LIST_ANSWERS, default="ok",
                        help="how engine::workers::list answers (fault injection)")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port, args.list_answer))


if __name__ == "__main__":
    main()
