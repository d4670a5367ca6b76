"""The daemon's one engine session (SPEC §10), against the stand-in engine and broken engines."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from daemon.engine.session import (
    DAEMON_WORKER_NAME,
    DEFAULT_ENGINE_URL,
    ENGINE_RETRY_FIRST_S,
    ENGINE_RETRY_MAX_S,
    EngineCallFailed,
    EngineSession,
    FunctionError,
    engine_address,
    engine_url_from_env,
)
from daemon.errors import InvalidArgument
from tests.support.engine import InvocationFailed, StandInEngine, free_port, invoke
from tests.support.wait import async_wait_until

ADDRESSES = [
    ("ws://127.0.0.1:49134", ("127.0.0.1", 49134)),
    ("ws://localhost:1/path", ("localhost", 1)),
    ("wss://engine.example", ("engine.example", 443)),
    ("ws://engine.example", ("engine.example", 80)),
    ("ws://[::1]:5000", ("::1", 5000)),
    ("http://h:2", ("h", 2)),
]


@pytest.mark.parametrize("url,expected", ADDRESSES, ids=[a[0] for a in ADDRESSES])
def test_engine_address(url: str, expected: tuple[str, int]) -> None:
    assert engine_address(url) == expected


@pytest.mark.parametrize("url", ["127.0.0.1:49134", "ftp://h:1", "ws://", "ws://h:99999"])
def test_bad_engine_url_is_one_clear_error(url: str) -> None:
    with pytest.raises(InvalidArgument, match="engine URL .* is invalid"):
        engine_address(url)
    with pytest.raises(InvalidArgument):
        EngineSession(url, version="t")


def test_engine_url_from_env() -> None:
    assert engine_url_from_env({}) == DEFAULT_ENGINE_URL == "ws://127.0.0.1:49134"
    assert engine_url_from_env({"III_URL": ""}) == DEFAULT_ENGINE_URL
    assert engine_url_from_env({"III_URL": "ws://10.0.0.1:1"}) == "ws://10.0.0.1:1"


def test_retry_delay_is_capped_exponential_with_jitter() -> None:
    session = EngineSession(DEFAULT_ENGINE_URL, version="t")
    for failures in range(1, 12):
        base = min(ENGINE_RETRY_MAX_S, ENGINE_RETRY_FIRST_S * 2 ** (failures - 1))
        delays = {session.retry_delay(failures) for _ in range(50)}
        assert all(base * 0.5 <= d <= base for d in delays), (failures, delays)
        assert len(delays) > 1  # jittered: many daemons do not retry in lockstep
    assert max(session.retry_delay(30) for _ in range(50)) <= ENGINE_RETRY_MAX_S


class Running:
    """A session running in a TaskGroup, with its up/down callbacks recorded."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.events: list[str] = []
        self.session = EngineSession(url, version="9.9", on_up=self._up, on_down=self._down,
                                     **kwargs)

    async def _up(self) -> None:
        self.events.append("up")

    async def _down(self) -> None:
        self.events.append("down")

    async def saw(self, *events: str) -> None:
        await async_wait_until(lambda: asyncio.sleep(0, self.events == list(events)), 10,
                               f"events {events}")


@pytest.fixture
async def engine() -> AsyncIterator[StandInEngine]:
    async with StandInEngine() as running:
        yield running


async def test_one_session_registers_and_serves_every_call(engine: StandInEngine) -> None:
    run = Running(engine.url)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(run.session.run())
        await asyncio.wait_for(run.session.wait_reachable(True), 10)
        await run.saw("up")
        assert run.session.down_since is None
        (daemon,) = engine.registered_workers()
        assert daemon["name"] == DAEMON_WORKER_NAME and daemon["pid"] == os.getpid()
        assert daemon["worker_id"] == run.session.worker_id
        for _ in range(20):
            listed = await run.session.call("engine::workers::list", {})
            assert [w["name"] for w in listed["workers"]] == [DAEMON_WORKER_NAME]
        assert engine.list_calls == 20
        assert engine.connections_opened == 1  # 20 calls, still the one connection
        task.cancel()
    assert not run.session.reachable
    await async_wait_until(lambda: asyncio.sleep(0, engine.stats()["open"] == []), 5,
                           "the engine to see the session closed")
    assert run.events == ["up", "down"]


async def test_engine_restarts_cost_one_reconnect_each() -> None:
    port = free_port()
    run = Running(f"ws://127.0.0.1:{port}")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(run.session.run())
        await asyncio.wait_for(run.session.wait_reachable(False), 10)
        assert run.events == [] and run.session.down_since is not None  # down from the start
        opened = 0
        for restart in range(3):
            engine = StandInEngine(port=port)
            await engine.start()
            await asyncio.wait_for(run.session.wait_reachable(True), 10)
            opened += engine.connections_opened
            assert engine.connections_opened == 1, restart
            before = time.monotonic()
            await engine.stop()
            await asyncio.wait_for(run.session.wait_reachable(False), 10)
            down_since = run.session.down_since
            assert down_since is not None and down_since >= before  # the clock starts at the drop
        assert opened == 3
        await run.saw("up", "down", "up", "down", "up", "down")
        task.cancel()


async def test_calls_fail_cleanly_without_session_and_on_error_answers(
        engine: StandInEngine) -> None:
    nowhere = EngineSession(f"ws://127.0.0.1:{free_port()}", version="t")
    with pytest.raises(EngineCallFailed) as info:
        await nowhere.call("engine::workers::list", {})
    assert info.value.code == "unavailable"

    run = Running(engine.url)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(run.session.run())
        await asyncio.wait_for(run.session.wait_reachable(True), 10)
        engine.list_answer = "error"
        with pytest.raises(EngineCallFailed) as info:
            await run.session.call("engine::workers::list", {})
        assert info.value.code == "internal" and "on fire" in str(info.value)
        engine.list_answer = "silent"
        with pytest.raises(EngineCallFailed) as info:
            await run.session.call("engine::workers::list", {}, timeout=0.2)
        assert info.value.code == "timeout"
        with pytest.raises(EngineCallFailed) as info:
            await run.session.call("no::such", {})
        assert info.value.code == "function_not_found"
        assert run.session.reachable and engine.connections_opened == 1
        task.cancel()


async def test_functions_served_over_the_session(engine: StandInEngine) -> None:
    async def echo(data: Any) -> Any:
        return {"echo": data}

    async def refuse(data: Any) -> Any:
        raise FunctionError("forbidden", "engine_control is off")

    async def crash(data: Any) -> Any:
        raise RuntimeError("a bug")

    run = Running(engine.url, functions={"t::echo": echo, "t::refuse": refuse,
                                         "t::crash": crash})
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(run.session.run())
        await asyncio.wait_for(run.session.wait_reachable(True), 10)
        assert await invoke(engine.url, "t::echo", [1, "x"]) == {"echo": [1, "x"]}
        with pytest.raises(InvocationFailed) as info:
            await invoke(engine.url, "t::refuse", {})
        assert info.value.error == {"code": "forbidden", "message": "engine_control is off"}
        with pytest.raises(InvocationFailed) as info:
            await invoke(engine.url, "t::crash", {})
        assert info.value.error["code"] == "internal" and "bug" not in str(info.value.error)
        task.cancel()


async def _count_connections(handler: Any) -> tuple[asyncio.Server, list[float]]:
    accepted: list[float] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(time.monotonic())
        await handler(reader, writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    return server, accepted


async def test_engine_that_never_completes_the_handshake() -> None:
    """Accepts TCP, never answers the upgrade: never reachable, tries back off (no storm)."""
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server, accepted = await _count_connections(silent)
    port = server.sockets[0].getsockname()[1]
    run = Running(f"ws://127.0.0.1:{port}", handshake_timeout=0.2)
    async with server, asyncio.TaskGroup() as tg:
        started = time.monotonic()
        task = tg.create_task(run.session.run())
        await asyncio.wait_for(run.session.wait_reachable(False), 10)
        # Each try costs the handshake budget plus a growing backoff: 0.2 + 0.125..0.25,
        # 0.2 + 0.25..0.5, ... (TCP probes connect too, one per try, and count here).
        await async_wait_until(lambda: asyncio.sleep(0, len(accepted) >= 8), 30, "4 tries")
        elapsed = time.monotonic() - started
        assert not run.session.reachable and run.events == []
        assert len(accepted) <= 2 * (1 + elapsed / 0.3) + 2  # never faster than the budget
        task.cancel()


@pytest.mark.parametrize("greeting", [
    {"type": "hello"}, "not json", None,
], ids=["wrong-first-message", "not-json", "closes-at-once"])
async def test_engine_with_a_wrong_greeting_is_not_a_session(greeting: Any) -> None:
    tries: list[int] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        tries.append(1)
        if isinstance(greeting, dict):
            await ws.send_json(greeting)
        elif isinstance(greeting, str):
            await ws.send_str(greeting)
        else:
            await ws.close()
            return ws
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    run = Running(f"ws://127.0.0.1:{port}", handshake_timeout=0.5)
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(run.session.run())
            await async_wait_until(lambda: asyncio.sleep(0, len(tries) >= 2), 20, "two tries")
            assert not run.session.reachable and run.events == []
            assert run.session.sessions_opened == 0
            task.cancel()
    finally:
        await runner.cleanup()


async def test_engine_pings_are_answered(engine: StandInEngine) -> None:
    """A JSON ``ping`` from the engine gets a ``pong``; WebSocket pings are aiohttp's."""
    pongs: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "workerregistered", "worker_id": "w"})
        await ws.send_json({"type": "ping"})
        async for msg in ws:
            data = json.loads(msg.data)
            if data.get("type") == "pong":
                pongs.append(data)
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    run = Running(f"ws://127.0.0.1:{port}")
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(run.session.run())
            await async_wait_until(lambda: asyncio.sleep(0, pongs == [{"type": "pong"}]), 10,
                                   "a pong")
            task.cancel()
    finally:
        await runner.cleanup()


async def test_heartbeat_closes_a_session_whose_engine_stopped_answering() -> None:
    """A peer that stops reading (no pong to our WebSocket pings) is dropped, not trusted."""
    frozen = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.send_json({"type": "workerregistered", "worker_id": "w"})
        await frozen.wait()
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    run = Running(f"ws://127.0.0.1:{port}", heartbeat=0.2)
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(run.session.run())
            await run.saw("up", "down")
            task.cancel()
    finally:
        frozen.set()
        await runner.cleanup()



@pytest.mark.parametrize(("status", "detail", "phase"), [
    ("preparing", None, "starting"), ("installing", None, "starting"),
    ("running", None, "running"), ("stopped", "exit code 0", "stopped"),
    ("stopped", "start failed: install script failed", "failed"), ("crashed", None, "failed"),
    ("backoff", None, "failed"), ("registered", None, "registered"),
], ids=lambda v: str(v))
def test_lifecycle_names_of_worker_events(status: str, detail: str | None, phase: str) -> None:
    from client.protocol.messages import EventNotification
    from daemon.api.engine_bus import lifecycle_of

    event = EventNotification(worker="w", status=status, time=0.0, detail=detail)
    assert lifecycle_of(event) == phase
