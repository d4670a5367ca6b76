"""Engine reachability watcher and engine::workers::list, against the stand-in engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from daemon.engine import (
    DEFAULT_ENGINE_URL,
    EngineWatcher,
    EngineWorker,
    engine_address,
    engine_url_from_env,
    list_engine_workers,
)
from daemon.errors import InvalidArgument
from tests.support.engine import StandInEngine, free_port
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
        EngineWatcher(url)


def test_engine_url_from_env() -> None:
    assert engine_url_from_env({}) == DEFAULT_ENGINE_URL == "ws://127.0.0.1:49134"
    assert engine_url_from_env({"III_URL": ""}) == DEFAULT_ENGINE_URL
    assert engine_url_from_env({"III_URL": "ws://10.0.0.1:1"}) == "ws://10.0.0.1:1"


@pytest.fixture
async def engine() -> AsyncIterator[StandInEngine]:
    async with StandInEngine() as running:
        yield running


async def test_watcher_follows_engine_up_and_down() -> None:
    port = free_port()
    events: list[str] = []

    async def up() -> None:
        events.append("up")

    async def down() -> None:
        events.append("down")

    watcher = EngineWatcher(f"ws://127.0.0.1:{port}", poll_interval=0.05, on_up=up,
                            on_down=down)
    assert not watcher.reachable and watcher.down_since is None
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(watcher.run())
        await asyncio.wait_for(watcher.wait_reachable(False), 5)
        assert events == []  # down from the start: nothing to stop, no callback
        assert watcher.down_since is not None and watcher.down_for() is not None

        engine = StandInEngine(port=port)
        await engine.start()
        await asyncio.wait_for(watcher.wait_reachable(True), 5)
        assert watcher.reachable and watcher.down_since is None and watcher.down_for() is None
        await async_wait_until(lambda: asyncio.sleep(0, events == ["up"]), 5, "on_up")

        await engine.stop()
        await asyncio.wait_for(watcher.wait_reachable(False), 5)
        first_down = watcher.down_since
        assert first_down is not None
        await async_wait_until(lambda: asyncio.sleep(0, events == ["up", "down"]), 5, "on_down")
        await watcher.probe()
        assert watcher.down_since == first_down  # still down: the start of the outage is kept

        await engine.start()  # the same port again
        await asyncio.wait_for(watcher.wait_reachable(True), 5)
        await async_wait_until(lambda: asyncio.sleep(0, events == ["up", "down", "up"]), 5,
                               "second on_up")
        await engine.stop()
        task.cancel()


async def test_first_probe_on_a_running_engine_calls_on_up(engine: StandInEngine) -> None:
    ups: list[bool] = []

    async def up() -> None:
        ups.append(True)

    watcher = EngineWatcher(engine.url, on_up=up)
    assert await watcher.probe() is True
    assert await watcher.probe() is True
    assert ups == [True]


async def test_list_none_when_nothing_listens() -> None:
    assert await list_engine_workers(f"ws://127.0.0.1:{free_port()}") is None


async def test_list_none_when_engine_never_answers() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts TCP, never speaks WebSocket
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await list_engine_workers(f"ws://127.0.0.1:{port}", timeout=0.5) is None


async def test_list_none_on_error_or_bad_shape() -> None:
    answers = [{"error": {"code": "forbidden", "message": "no"}},
               {"result": {"workers": "not-a-list"}},
               {"result": None}]

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "workerregistered", "worker_id": "x"})
        async for msg in ws:
            data = json.loads(msg.data)
            await ws.send_json({"type": "invocationresult", "invocation_id": "other",
                                "result": {"workers": []}})  # not ours: ignored
            await ws.send_json({"type": "invocationresult", **answers.pop(0),
                                "invocation_id": data["invocation_id"],
                                "function_id": data["function_id"]})
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        for _ in range(3):
            assert await list_engine_workers(f"ws://127.0.0.1:{port}") is None
        assert answers == []
    finally:
        await runner.cleanup()


async def test_list_registered_workers(engine: StandInEngine) -> None:
    assert await list_engine_workers(engine.url) == []
    async with aiohttp.ClientSession() as session, session.ws_connect(engine.url) as ws:
        hello = await ws.receive_json()
        assert hello["type"] == "workerregistered"
        await ws.send_json({"type": "invokefunction", "function_id": "engine::workers::register",
                            "data": {"name": "w1", "pid": 1, "runtime": "python"},
                            "action": {"type": "void"}})
        workers = await async_wait_until(lambda: list_engine_workers(engine.url), 5, "w1 listed")
        assert workers == [EngineWorker(name="w1", status="connected")]
    await async_wait_until(
        lambda: asyncio.sleep(0, engine.registered_workers() == []), 5, "w1 gone")
    assert await list_engine_workers(engine.url) == []
