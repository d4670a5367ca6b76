"""Engine session benchmarks (issue 12, "Measure"). Printed only, never asserted.

(a) connections the daemon opens to an idle engine per minute, one worker running (goal <= 1),
    against a real ``iii-sdk`` worker connected to the same engine for the same window;
(b) engine up -> 10 workers running (goal <= 1 s), against ``iii worker start`` of the same 10
    workers with the engine already up (the launch cost alone);
(c) freshness: a worker's registration -> ``iii worker list --json`` showing
    ``engine_registered: true`` (goal <= 300 ms), against the engine itself listing it.

    python -m bench engine
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.daemon import III_CLI, DaemonProcess, kill_sandboxes
from tests.support.engine import EngineProcess, invoke_blocking
from tests.support.images import busybox_layers, push_image
from tests.support.projects import make_shell_project
from tests.support.registry import RegistryServer

IDLE_WINDOW_S = 30.0
STARTED = 10
FRESHNESS_RUNS = 10
DEADLINE_S = 120.0

SDK_WORKER = """\
import threading
from iii import register_worker
iii = register_worker(__import__("os").environ["III_URL"])
iii.register_function("bench::noop", lambda data: data)
threading.Event().wait()
"""


def until(condition: Callable[[], bool], what: str) -> float:
    """Seconds until ``condition`` holds (polled back to back, as a user would retry)."""
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > DEADLINE_S:
            raise SystemExit(f"bench: {what} did not happen within {DEADLINE_S:.0f} s")
        time.sleep(0.005)
    return time.perf_counter() - start


def running(daemon: DaemonProcess) -> int:
    return sum(w["status"] == "running" for w in daemon.json("worker", "list")["workers"])


def bench_idle(home: Path, image: str) -> None:
    engine = EngineProcess().start()
    daemon = DaemonProcess(home, III_URL=engine.url).start()
    sdk_home = home / "sdk-home"
    sdk_home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    env.update(HOME=str(sdk_home), III_URL=engine.url, III_WORKER_NAME="bench-sdk")
    sdk = subprocess.Popen([sys.executable, "-c", SDK_WORKER], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = daemon.iii("worker", "add", str(make_shell_project(home, image, "idle",
                                                                start="exec sleep 1000")))
        assert out.returncode == 0, out.stderr
        until(lambda: {c["name"] for c in engine.stats()["open"]} >=
              {"iii-sandbox-daemon", "bench-sdk"}, "both connected")
        before = engine.stats()
        time.sleep(IDLE_WINDOW_S)  # the measurement itself: nothing happens for this long
        after = engine.stats()
        opened = after["connections_opened"] - before["connections_opened"]
        lists = after["list_calls"] - before["list_calls"]
        per_min = opened * 60 / IDLE_WINDOW_S
        print(f"(a) idle, 1 worker running, {IDLE_WINDOW_S:.0f} s: {per_min:.1f} connections/min "
              f"opened by daemon + iii-sdk worker together (goal <= 1; the issue measured 60); "
              f"daemon asked engine::workers::list {lists * 60 / IDLE_WINDOW_S:.0f}/min over "
              f"its one session; open now: {sorted(c['name'] for c in after['open'])}")
    finally:
        sdk.kill()
        sdk.wait()
        daemon.stop()
        kill_sandboxes(home)
        engine.stop()


def bench_engine_up(home: Path, image: str) -> None:
    engine = EngineProcess()
    daemon = DaemonProcess(home, III_URL=engine.url).start()
    try:
        names = [f"b{i}" for i in range(STARTED)]
        for name in names:
            out = daemon.iii("worker", "add", str(make_shell_project(home, image, name,
                                                                    start="exec sleep 1000")))
            assert out.returncode == 0, out.stderr
        spawned = time.perf_counter()
        engine.start()  # returns once the engine printed that it listens
        listening = time.perf_counter()
        until(lambda: running(daemon) == STARTED, "10 workers running")
        up = time.perf_counter() - listening
        from_spawn = time.perf_counter() - spawned
        for name in names:
            daemon.iii("worker", "stop", name)
        start = time.perf_counter()
        procs = [subprocess.Popen([III_CLI, "worker", "start", name], env=daemon.env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for name in names]
        for proc in procs:
            proc.wait()
        until(lambda: running(daemon) == STARTED, "10 manual starts")
        manual = time.perf_counter() - start
        print(f"(b) engine listening -> all {STARTED} workers running: {up * 1000:.0f} ms "
              f"(goal <= 1000; from spawning the engine process: {from_spawn * 1000:.0f} ms, "
              f"the issue measured 1200-1800 that way) vs {STARTED} concurrent "
              f"`iii worker start` with the engine up: {manual * 1000:.0f} ms -> "
              f"{up / manual:.2f}x")
    finally:
        daemon.stop()
        kill_sandboxes(home)
        engine.stop()


def bench_freshness(home: Path, image: str) -> None:
    from websockets.sync.client import connect

    engine = EngineProcess().start()
    daemon = DaemonProcess(home, III_URL=engine.url).start()
    try:
        out = daemon.iii("worker", "add", str(make_shell_project(home, image, "fresh",
                                                                start="exec sleep 1000")))
        assert out.returncode == 0, out.stderr

        def shown(value: bool) -> bool:
            return bool(daemon.worker("fresh")["engine_registered"] is value)

        def engine_lists() -> bool:
            listed = invoke_blocking(engine.url, "engine::workers::list", {})
            return any(w["name"] == "fresh" for w in listed["workers"])

        daemon_times, engine_times = [], []
        for run in range(FRESHNESS_RUNS):
            until(lambda: shown(False), "engine_registered false")
            with connect(engine.url) as ws:
                ws.recv()  # workerregistered
                ws.send(json.dumps({"type": "invokefunction",
                                    "function_id": "engine::workers::register",
                                    "data": {"name": "fresh", "pid": os.getpid()},
                                    "action": {"type": "void"}}))
                if run % 2:
                    engine_times.append(until(engine_lists, "the engine to list it"))
                else:
                    daemon_times.append(until(lambda: shown(True), "engine_registered true"))
        cli_floor = statistics.median(
            until(lambda: daemon.worker("fresh") is not None, "a list") for _ in range(10))
        print(f"(c) registration -> `iii worker list --json` engine_registered true: median "
              f"{statistics.median(daemon_times) * 1000:.0f} ms, max "
              f"{max(daemon_times) * 1000:.0f} ms over {len(daemon_times)} runs (goal <= 300; "
              f"the issue measured up to 1000) vs the engine listing it to a caller: median "
              f"{statistics.median(engine_times) * 1000:.0f} ms; one `iii worker list --json` "
              f"costs {cli_floor * 1000:.0f} ms")
    finally:
        daemon.stop()
        kill_sandboxes(home)
        engine.stop()


def main() -> int:
    os.environ.pop("III_SOCKET", None)
    with RegistryServer() as registry:
        push_image(registry.access, "bench/busybox", "latest", busybox_layers())
        image = f"{registry.host}/bench/busybox:latest"
        for bench in (bench_freshness, bench_engine_up, bench_idle):
            with tempfile.TemporaryDirectory(prefix="iiib-", dir="/tmp") as tmp:
                bench(Path(tmp), image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
