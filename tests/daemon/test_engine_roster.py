"""Engine truth over the one session: events, on-demand freshness, bounded waits, bad answers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from client.protocol.messages import EventNotification
from daemon.engine.roster import ROSTER_ON_DEMAND_WAIT_S, EngineRoster
from daemon.engine.session import EngineSession
from daemon.events import EventBus
from tests.support.engine import StandInEngine
from tests.support.wait import async_wait_until


class Setup:
    def __init__(self, engine: StandInEngine) -> None:
        self.engine = engine
        self.events = EventBus()
        self.session = EngineSession(engine.url, version="t")
        self.updates: list[set[str] | None] = []
        self.busy = False
        self.roster = EngineRoster(self.session, self.events, managed=lambda n: n != "other",
                                   busy=lambda: self.busy, on_update=self.updates.append)


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    async with StandInEngine() as engine:
        s = Setup(engine)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(s.session.run()), tg.create_task(s.roster.run())]
            await asyncio.wait_for(s.session.wait_reachable(True), 10)
            yield s
            for task in tasks:
                task.cancel()


async def register(url: str, name: str) -> aiohttp.ClientWebSocketResponse:
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(url)
    await ws.receive_json()
    await ws.send_json({"type": "invokefunction", "function_id": "engine::workers::register",
                        "data": {"name": name, "pid": 1}, "action": {"type": "void"}})
    ws._iii_http = http  # type: ignore[attr-defined]  # closed with the socket below
    return ws


async def close(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.close()
    await ws._iii_http.close()  # type: ignore[attr-defined]


async def test_fresh_asks_on_demand_and_events_follow_registrations(setup: Setup) -> None:
    events: list[EventNotification] = []

    async def collect() -> None:
        async for event in setup.events.stream():
            events.append(event)

    async with asyncio.TaskGroup() as tg:
        collector = tg.create_task(collect())
        await async_wait_until(lambda: setup.roster.fresh(), 10, "a first answer")
        assert setup.roster.names == {"iii-sandbox-daemon"}
        w1 = await register(setup.engine.url, "w1")
        other = await register(setup.engine.url, "other")
        await async_wait_until(
            lambda: asyncio.sleep(0, len(setup.engine.registered_workers()) == 3), 5, "w1")
        age = await setup.roster.fresh(max_age=0)  # older than max_age: asked again now
        assert age is not None and age < 1
        assert setup.roster.names == {"iii-sandbox-daemon", "w1", "other"}
        await close(w1)
        await async_wait_until(
            lambda: asyncio.sleep(0, len(setup.engine.registered_workers()) == 2), 5, "w1 gone")
        await setup.roster.fresh(max_age=0)
        assert setup.roster.names == {"iii-sandbox-daemon", "other"}
        await async_wait_until(lambda: asyncio.sleep(0, len(events) == 2), 5, "two events")
        assert [(e.worker, e.status) for e in events] == [("w1", "registered"),
                                                          ("w1", "unregistered")]
        collector.cancel()
        await close(other)
    assert setup.engine.connections_opened == 3  # the daemon's one session + w1 + other


async def test_a_fresh_answer_is_not_asked_again(setup: Setup) -> None:
    await async_wait_until(lambda: setup.roster.fresh(), 10, "a first answer")
    calls = setup.engine.list_calls
    await setup.roster.fresh(max_age=60)
    assert setup.engine.list_calls == calls


async def test_a_silent_engine_does_not_make_list_slow(setup: Setup) -> None:
    await async_wait_until(lambda: setup.roster.fresh(), 10, "a first answer")
    setup.engine.list_answer = "silent"
    started = time.monotonic()
    ages = await asyncio.gather(*(setup.roster.fresh(max_age=0) for _ in range(5)))
    waited = time.monotonic() - started
    assert setup.engine.list_calls >= 1
    assert all(a is not None for a in ages)  # the cached answer, with its age
    assert setup.roster.names == {"iii-sandbox-daemon"}
    # Bounded by the on-demand wait (generous margin for a loaded machine), not by the call's
    # own 2 s budget: the five askers shared one call.
    assert waited < ROSTER_ON_DEMAND_WAIT_S + 1.5


@pytest.mark.parametrize("answer", ["error", "garbage"])
async def test_bad_answers_make_the_truth_unknown(setup: Setup, answer: str) -> None:
    await async_wait_until(lambda: setup.roster.fresh(), 10, "a first answer")
    setup.engine.list_answer = answer
    assert await setup.roster.fresh(max_age=0) is None
    assert setup.roster.names is None and setup.updates[-1] is None
    assert setup.session.reachable and setup.engine.connections_opened == 1
    setup.engine.list_answer = "ok"
    assert await setup.roster.fresh(max_age=0) is not None
    assert setup.roster.names == {"iii-sandbox-daemon"}


async def test_session_down_forgets_the_truth(setup: Setup) -> None:
    await async_wait_until(lambda: setup.roster.fresh(), 10, "a first answer")
    setup.roster.forget()
    assert setup.roster.names is None and setup.roster.age() is None


async def test_becoming_busy_during_a_steady_wait_refreshes_at_the_busy_pace(
        setup: Setup) -> None:
    await async_wait_until(lambda: setup.roster.fresh(), 10, "a first answer")
    calls = setup.engine.list_calls
    setup.busy = True  # a worker started: the steady 10 s wait must not hold its truth back
    await async_wait_until(lambda: asyncio.sleep(0, setup.engine.list_calls >= calls + 2), 8,
                           "two background refreshes")
    assert setup.engine.connections_opened == 1


async def test_a_broken_engine_is_reported_once_not_every_second(
        setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    await async_wait_until(lambda: setup.roster.fresh(), 10, "a first answer")
    setup.engine.list_answer = "error"
    with caplog.at_level(logging.INFO, logger="iii.daemon.engine"):
        for _ in range(4):
            assert await setup.roster.fresh(max_age=0) is None
        setup.engine.list_answer = "ok"
        assert await setup.roster.fresh(max_age=0) is not None
    messages = [r.getMessage() for r in caplog.records if r.name == "iii.daemon.engine"]
    assert messages == ["engine::workers::list failed: internal: the roster is on fire",
                        "engine::workers::list answers again"], messages
