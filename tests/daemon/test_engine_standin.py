"""The stand-in engine (tests/support/engine.py) with the real iii SDK, and its protocol edges.

The SDK registers under ``III_WORKER_NAME`` if set, else ``InitOptions(worker_name=...)``, else
``<hostname>:<pid>`` (iii-sdk 0.25, ``III._worker_name``); both cases are checked here.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from daemon.engine.session import EngineWorker
from tests.support.engine import (
    EngineFactory,
    EngineProcess,
    InvocationFailed,
    StandInEngine,
    invoke,
)
from tests.support.wait import async_wait_until

WORKER = textwrap.dedent("""\
    import os, threading
    from iii import register_worker

    iii = register_worker(os.environ["III_URL"])

    def echo(data):
        return {"echo": data, "pid": os.getpid()}

    def relay(data):
        # a call from a worker: routed by the engine to the worker that registered t::echo
        return iii.trigger({"function_id": "t::echo", "payload": data})

    iii.register_function(os.environ.get("FUNCTION", "t::echo"),
                          relay if os.environ.get("FUNCTION") == "t::relay" else echo)
    threading.Event().wait()
""")

WorkerFactory = Callable[..., subprocess.Popen[bytes]]


def test_real_sdk_is_installed() -> None:
    # Not a skip: without the SDK the tests below would prove nothing.
    assert importlib.util.find_spec("iii") is not None, \
        "iii-sdk is missing: it is in the test extra (pip install -e '.[test]')"


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[EngineFactory]:
    with EngineFactory(tmp_path) as factory:
        yield factory


@pytest.fixture
def sdk_worker(tmp_path: Path) -> Iterator[WorkerFactory]:
    """Start real SDK worker processes; all are killed and reaped at teardown."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    home = tmp_path / "home"  # the SDK writes ~/.iii/run/ markers: never the real home
    home.mkdir()
    procs: list[subprocess.Popen[bytes]] = []

    def start(url: str, name: str | None, function: str = "t::echo") -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
        env.update(HOME=str(home), III_URL=url, FUNCTION=function)
        if name is not None:
            env["III_WORKER_NAME"] = name
        log = open(tmp_path / f"worker-{len(procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        log.close()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def engine_workers(url: str) -> list[EngineWorker] | None:
    """What ``engine::workers::list`` answers, asked as a caller; None when nothing answers."""
    try:
        result = await invoke(url, "engine::workers::list", {}, timeout=5)
    except (OSError, aiohttp.ClientError, TimeoutError):
        return None
    return [EngineWorker(name=w["name"], status=w["status"]) for w in result["workers"]]


async def listed(url: str, names: set[str]) -> bool:
    """True once the engine lists exactly ``names``."""
    workers = await engine_workers(url)
    return workers is not None and {w.name for w in workers} == names


async def test_real_sdk_worker_registers_answers_and_disappears(
        engines: EngineFactory, sdk_worker: WorkerFactory) -> None:
    engine = engines()
    proc = sdk_worker(engine.url, "echo-worker")
    await async_wait_until(lambda: listed(engine.url, {"echo-worker"}), 30, "echo-worker listed")
    assert await engine_workers(engine.url) == [EngineWorker(name="echo-worker", status="connected")]

    answer = await invoke(engine.url, "t::echo", {"x": [1, "two"]})
    assert answer == {"echo": {"x": [1, "two"]}, "pid": proc.pid}

    with pytest.raises(InvocationFailed) as info:
        await invoke(engine.url, "t::nope", {})
    assert info.value.error["code"] == "function_not_found"

    proc.send_signal(signal.SIGKILL)
    proc.wait()
    await async_wait_until(lambda: listed(engine.url, set()), 10, "worker gone")
    assert await engine_workers(engine.url) == []
    with pytest.raises(InvocationFailed):
        await invoke(engine.url, "t::echo", {})


async def test_default_name_and_worker_to_worker_calls(
        engines: EngineFactory, sdk_worker: WorkerFactory) -> None:
    engine = engines()
    echo = sdk_worker(engine.url, None)
    sdk_worker(engine.url, "relay", function="t::relay")
    default_name = f"{socket.gethostname()}:{echo.pid}"
    await async_wait_until(lambda: listed(engine.url, {default_name, "relay"}), 30,
                           "both workers listed")
    assert await invoke(engine.url, "t::relay", "hi") == {"echo": "hi", "pid": echo.pid}


async def test_sdk_reconnects_after_engine_restart_on_same_port(
        engines: EngineFactory, sdk_worker: WorkerFactory) -> None:
    engine = engines()
    port = engine.port
    survivor = sdk_worker(engine.url, "survivor")
    await async_wait_until(lambda: listed(engine.url, {"survivor"}), 30, "listed")
    engine.stop()
    assert await engine_workers(engine.url) is None
    engine.start()
    assert engine.port == port
    await async_wait_until(lambda: listed(engine.url, {"survivor"}), 30, "listed again")
    assert await invoke(engine.url, "t::echo", 1) == {"echo": 1, "pid": survivor.pid}


async def test_otel_ping_and_garbage_do_not_break_the_engine() -> None:
    async with StandInEngine() as engine, aiohttp.ClientSession() as session:
        async with session.ws_connect(engine.url + "/otel") as otel:
            await otel.send_bytes(b"\x00\x01binary telemetry")
            await otel.send_str("not json")
        async with session.ws_connect(engine.url, autoping=False) as ws:
            assert (await ws.receive_json())["type"] == "workerregistered"
            await ws.ping(b"hello")
            pong = await ws.receive()
            assert pong.type == aiohttp.WSMsgType.PONG and pong.data == b"hello"
            await ws.send_str("{{{ not json")
            await ws.send_bytes(b"\xff")
            await ws.send_str(json.dumps([1, 2]))
            await ws.send_json({"type": "somethingnew", "x": 1})
            await ws.send_json({"type": "registerfunction"})  # no id
            await ws.send_json({"type": "ping"})
            assert await ws.receive_json() == {"type": "pong"}
        assert await invoke(engine.url, "engine::workers::list", {}) == {"workers": []}


async def test_call_to_a_worker_that_disconnects_gets_an_error() -> None:
    async with StandInEngine() as engine, aiohttp.ClientSession() as session:
        async with session.ws_connect(engine.url) as callee:
            await callee.receive_json()
            await callee.send_json({"type": "registerfunction", "id": "t::vanish"})
            await invoke(engine.url, "engine::workers::list", {})  # registration processed
            call = invoke(engine.url, "t::vanish", {"a": 1})
            pending = asyncio.ensure_future(call)
            request = await callee.receive_json()
            assert request["type"] == "invokefunction" and request["data"] == {"a": 1}
            assert request["function_id"] == "t::vanish" and request["invocation_id"]
        with pytest.raises(InvocationFailed) as info:
            await pending
        assert info.value.error["code"] == "worker_disconnected"


def test_engine_runs_as_a_module(tmp_path: Path) -> None:
    engine = EngineProcess(log_path=tmp_path / "engine.log").start()
    try:
        assert engine.running
        assert asyncio.run(invoke(engine.url, "engine::workers::list", {})) == {"workers": []}
    finally:
        engine.stop()
    assert not engine.running
