"""Daemon protocol benchmarks (issue: daemon, "Measure" a–c). Printed, never asserted.

(a) ``iii worker list --json`` wall time vs ``python -c pass`` (the interpreter floor),
    median of 10 — against a daemon serving 20 workers;
(b) ``worker.list`` calls/s with 8 concurrent raw-socket clients (separate processes), and p99;
(c) idle RSS of a real ``python -m daemon run``; (a') also (a) against that real daemon.

Until the worker lifecycle is wired into ``daemon.app.build_service``, (a) and (b) run the real
server, dispatcher and listener (uvloop, as ``daemon.app`` does) in a separate process with a
static service answering ``worker.list`` with 20 synthetic workers: they measure the CLI and the
protocol path, not the lifecycle.

    python -m bench daemon_rpc
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RUNS = 10
CLIENTS = 8
DURATION_S = 3.0
WORKERS = 20
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 30.0


def _serve(home: str, workers: int) -> None:
    """Child mode: the real server stack (uvloop) with a static 20-worker service."""
    import asyncio

    import uvloop

    from client.protocol import Resources, Worker, WorkerListResult
    from daemon.app import LifecyclePendingService, serve_daemon
    from daemon.settings import load_settings

    listing = WorkerListResult(workers=[
        Worker(name=f"worker-{i}", type="local", source=f"/src/worker-{i}", status="running",
               pid=1000 + i, isolation="namespace", engine_registered=True,
               resources=Resources(memory=2048, cpus=2)) for i in range(workers)])

    class StaticListService(LifecyclePendingService):
        async def list(self) -> WorkerListResult:
            return listing

    async def factory(settings: Any, stack: Any) -> StaticListService:
        return StaticListService()

    settings = load_settings({"III_HOME": home, "III_URL": "ws://127.0.0.1:9"})
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve_daemon(settings, service_factory=factory))


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"daemon did not start (status {proc.poll()})")
        time.sleep(0.02)


def _median_wall(argv: list[str], env: dict[str, str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _client(sock_path: str, duration: float, queue: Any) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    f = s.makefile("rb")
    latencies = []
    req_id = 0
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        req_id += 1
        start = time.perf_counter()
        s.sendall(b'{"jsonrpc":"2.0","id":%d,"method":"worker.list"}\n' % req_id)
        line = f.readline()
        latencies.append(time.perf_counter() - start)
        if b'"result"' not in line:
            raise SystemExit(f"bad reply: {line[:200]!r}")
    s.close()
    queue.put(latencies)


def _throughput(sock_path: str) -> tuple[float, float, float]:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_client, args=(sock_path, DURATION_S, queue))
             for _ in range(CLIENTS)]
    start = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    latencies = sorted(x for r in results for x in r)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    return len(latencies) / wall, p99 * 1000, statistics.median(latencies) * 1000


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _real_daemon() -> tuple[float, float, float]:
    """A real ``python -m daemon run`` (the full lifecycle, 0 workers): CLI time and idle RSS."""
    with tempfile.TemporaryDirectory(prefix="iiib-", dir="/tmp") as home:
        env = {**os.environ, "III_HOME": home, "III_URL": "ws://127.0.0.1:9",
               "III_NO_AUTOSTART": "1"}
        env.pop("III_SOCKET", None)
        proc = subprocess.Popen([sys.executable, "-m", "daemon", "run"], env=env,
                                stderr=subprocess.DEVNULL)
        try:
            _wait_for(Path(home) / "iii.sock", proc)
            floor = _median_wall([sys.executable, "-c", "pass"], env)
            cli = _median_wall([str(BIN / "iii"), "worker", "list", "--json"], env)
            time.sleep(1.0)  # let it idle after the requests
            return cli, floor, _rss_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", metavar="HOME")
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, WORKERS)
        return 0

    with tempfile.TemporaryDirectory(prefix="iiib-", dir="/tmp") as home:
        env = {**os.environ, "III_HOME": home, "III_NO_AUTOSTART": "1"}
        env.pop("III_SOCKET", None)
        server = subprocess.Popen([sys.executable, "-m", "bench.daemon_rpc", "--serve", home],
                                  env=env, stderr=subprocess.DEVNULL,
                                  cwd=Path(__file__).resolve().parent.parent)
        try:
            sock = Path(home) / "iii.sock"
            _wait_for(sock, server)
            out = subprocess.run([str(BIN / "iii"), "worker", "list", "--json"], env=env,
                                 capture_output=True, check=True).stdout
            assert len(json.loads(out)["workers"]) == WORKERS
            floor = _median_wall([sys.executable, "-c", "pass"], env)
            cli = _median_wall([str(BIN / "iii"), "worker", "list", "--json"], env)
            table = _median_wall([str(BIN / "iii"), "worker", "list"], env)
            print(f"(a) iii worker list --json ({WORKERS} workers): {cli * 1000:.1f} ms vs "
                  f"python -c pass {floor * 1000:.1f} ms -> ratio {cli / floor:.2f}x "
                  f"(goal <= 3x); human table: {table * 1000:.1f} ms")
            rate, p99, p50 = _throughput(str(sock))
            print(f"(b) worker.list with {CLIENTS} raw-socket clients: {rate:,.0f} calls/s "
                  f"(goal >= 5,000), p50 {p50:.2f} ms, p99 {p99:.2f} ms (goal <= 10 ms); "
                  f"daemon RSS after load {_rss_mib(server.pid):.1f} MiB")
        finally:
            server.terminate()
            server.wait(30)
    cli, floor, rss = _real_daemon()
    print(f"(a') real daemon, 0 workers: iii worker list --json {cli * 1000:.1f} ms vs "
          f"{floor * 1000:.1f} ms -> ratio {cli / floor:.2f}x")
    print(f"(c) idle RSS of python -m daemon run (0 workers): {rss:.1f} MiB (goal <= 60 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
