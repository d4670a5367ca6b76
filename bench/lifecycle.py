"""Daemon benchmarks against the real lifecycle (issue: daemon, "Measure" a, b, d). Printed only.

(a) ``iii worker list --json`` with 20 registered local workers vs ``python -c pass``;
(b) ``worker.list`` calls/s and p99 with 8 concurrent raw-socket clients on that daemon;
(d) time from engine-up to all of 10 workers running (namespace backend, busybox image from a
    real local registry, workers added while the engine was down).

    python -m bench lifecycle
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from bench.daemon_rpc import _median_wall, _throughput
from tests.support.daemon import III_CLI, DaemonProcess, kill_sandboxes
from tests.support.engine import EngineProcess
from tests.support.images import busybox_layers, push_image
from tests.support.registry import RegistryServer, free_port

LISTED = 20
STARTED = 10


def _project(root: Path, name: str, image: str) -> Path:
    project = root / name
    project.mkdir()
    (project / "requirements.txt").write_text("")
    (project / "iii.worker.yaml").write_text(
        f"name: {name}\nruntime:\n  kind: python\n  base_image: {image}\n"
        "scripts:\n  install: \"\"\n  start: \"exec sleep 1000\"\n")
    return project


def bench_list() -> None:
    with tempfile.TemporaryDirectory(prefix="iiib-", dir="/tmp") as tmp:
        home = Path(tmp)
        entries = "".join(f"  - name: w{i}\n    worker_path: {home}/p{i}\n" for i in range(LISTED))
        (home / "config.yaml").write_text("workers:\n" + entries)
        daemon = DaemonProcess(home, III_URL=f"ws://127.0.0.1:{free_port()}").start()
        try:
            env = daemon.env
            floor = _median_wall([sys.executable, "-c", "pass"], env)
            cli = _median_wall([III_CLI, "worker", "list", "--json"], env)
            print(f"(a) iii worker list --json, {LISTED} workers, real daemon: {cli * 1000:.1f} ms"
                  f" vs python -c pass {floor * 1000:.1f} ms -> {cli / floor:.2f}x (goal <= 3x)")
            rate, p99, p50 = _throughput(str(daemon.socket))
            print(f"(b) worker.list, 8 clients, real daemon with {LISTED} workers: "
                  f"{rate:,.0f} calls/s (goal >= 5,000), p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                  "(goal <= 10 ms)")
        finally:
            daemon.stop()


def bench_engine_up() -> None:
    with tempfile.TemporaryDirectory(prefix="iiib-", dir="/tmp") as tmp, \
            RegistryServer() as registry:
        home = Path(tmp)
        push_image(registry.access, "bench/busybox", "latest", busybox_layers())
        image = f"{registry.host}/bench/busybox:latest"
        engine = EngineProcess()
        daemon = DaemonProcess(home, III_URL=engine.url).start()
        try:
            for i in range(STARTED):
                out = daemon.iii("worker", "add", str(_project(home, f"b{i}", image)))
                assert out.returncode == 0, out.stderr
            start = time.perf_counter()
            engine.start()
            while sum(w["status"] == "running"
                      for w in daemon.json("worker", "list")["workers"]) < STARTED:
                if time.perf_counter() - start > 120:
                    raise SystemExit("workers did not all start within 120 s")
                time.sleep(0.02)
            elapsed = time.perf_counter() - start
            print(f"(d) engine up -> all {STARTED} workers running: {elapsed * 1000:.0f} ms "
                  f"({elapsed / STARTED * 1000:.0f} ms per worker)")
        finally:
            daemon.stop()
            kill_sandboxes(home)
            engine.stop()


def main() -> int:
    os.environ.pop("III_SOCKET", None)
    bench_list()
    bench_engine_up()
    return 0


if __name__ == "__main__":
    sys.exit(main())
