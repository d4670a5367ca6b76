"""Daemon benchmarks on the real daemon and lifecycle (issue: daemon, "Measure" a–d). Printed only.

(a) ``iii worker list --json`` with 20 registered workers vs ``python -c pass`` (the floor);
(b) ``worker.list`` calls/s and p99 with 8 concurrent raw-socket clients (separate processes);
(c) idle RSS of ``python -m daemon run``.
(Engine up -> 10 workers running is in ``bench/engine.py``.)

    python -m bench daemon
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.daemon import III_CLI, DaemonProcess
from tests.support.registry import free_port

RUNS = 10
CLIENTS = 8
DURATION_S = 3.0
LISTED = 20
IDLE_SETTLE_S = 1.0  # let the daemon idle after the requests before reading its RSS


def median_wall(argv: list[str], env: dict[str, str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _client(sock_path: str, duration: float, queue: Any) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
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
    queue.put(latencies)


def throughput(sock_path: str) -> tuple[float, float, float]:
    """(calls/s, p99 ms, p50 ms) of ``worker.list`` from CLIENTS processes."""
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


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_idle_rss() -> None:
    with tempfile.TemporaryDirectory(prefix="iiib-", dir="/tmp") as tmp:
        daemon = DaemonProcess(Path(tmp), III_URL=f"ws://127.0.0.1:{free_port()}").start()
        try:
            assert daemon.proc is not None
            time.sleep(IDLE_SETTLE_S)
            print(f"(c) idle RSS of python -m daemon run (0 workers): "
                  f"{rss_mib(daemon.proc.pid):.1f} MiB (goal <= 60 MiB)")
        finally:
            daemon.stop()


@contextlib.contextmanager
def listing_daemon(listed: int = LISTED) -> Iterator[DaemonProcess]:
    """A real daemon whose config.yaml holds ``listed`` workers (never started)."""
    with tempfile.TemporaryDirectory(prefix="iiib-", dir="/tmp") as tmp:
        home = Path(tmp)
        entries = "".join(f"  - name: w{i}\n    worker_path: {home}/p{i}\n" for i in range(listed))
        (home / "config.yaml").write_text("workers:\n" + entries)
        daemon = DaemonProcess(home, III_URL=f"ws://127.0.0.1:{free_port()}").start()
        try:
            yield daemon
        finally:
            daemon.stop()


def bench_list() -> None:
    with listing_daemon() as daemon:
        floor = median_wall([sys.executable, "-c", "pass"], daemon.env)
        cli = median_wall([III_CLI, "worker", "list", "--json"], daemon.env)
        print(f"(a) iii worker list --json, {LISTED} workers: {cli * 1000:.1f} ms vs "
              f"python -c pass {floor * 1000:.1f} ms -> {cli / floor:.2f}x (goal <= 3x)")
        rate, p99, p50 = throughput(str(daemon.socket))
        print(f"(b) worker.list, {CLIENTS} clients, {LISTED} workers: {rate:,.0f} calls/s "
              f"(goal >= 5,000), p50 {p50:.2f} ms, p99 {p99:.2f} ms (goal <= 10 ms)")


def main() -> int:
    os.environ.pop("III_SOCKET", None)
    bench_list()
    bench_idle_rss()
    return 0


if __name__ == "__main__":
    sys.exit(main())
