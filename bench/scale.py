"""Scale (issue 22): many sleeping workers on one daemon, everything under it counted from
outside. Printed only, never asserted. The baseline is the same run at half the count, so the
ratios show what grows faster than the count (2.00x = linear).

For each count: engine up -> all running (the daemon auto-starts them), PSS per worker split
by process (launcher, exit recorder, sandbox init, network helper; the workload itself apart),
daemon RSS, daemon CPU while all are idle, ``iii worker list --json`` with the engine up, and
daemon stop -> every sandbox gone (the stop grace).

    python -m bench scale [--count 100] [--backend auto|bridge|pasta|slirp4netns]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.launcher import children, memory_kib
from tests.support.daemon import III_CLI, DaemonProcess, kill_sandboxes, launchers_of
from tests.support.engine import EngineProcess
from tests.support.images import busybox_layers, push_image
from tests.support.projects import make_shell_project
from tests.support.registry import RegistryServer

DEADLINE_S = 600.0
IDLE_WINDOW_S = 10.0
LIST_RUNS = 5
CLOCK = os.sysconf("SC_CLK_TCK")


def until(condition: Callable[[], bool], what: str) -> float:
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > DEADLINE_S:
            raise SystemExit(f"bench: {what} did not happen within {DEADLINE_S:.0f} s")
        time.sleep(0.05)
    return time.perf_counter() - start


def running(daemon: DaemonProcess) -> int:
    return sum(w["status"] == "running" for w in daemon.json("worker", "list")["workers"])


def kind(pid: int) -> str:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "gone"
    name = Path(argv0).name
    return name if name in ("pasta", "slirp4netns") else comm


def memory(home: Path, names: list[str]) -> dict[str, float]:
    """MiB of PSS by process kind, summed over every worker's tree."""
    pss: dict[str, float] = collections.defaultdict(float)
    for name in names:
        for launcher in launchers_of(home, name):
            pss["launcher"] += memory_kib(launcher)[1] / 1024
            for child in children(launcher):
                k = kind(child)
                if k == "iii-init":
                    pss["sandbox init"] += memory_kib(child)[1] / 1024
                    for workload in children(child):
                        pss["workload"] += memory_kib(workload)[1] / 1024
                else:
                    pss[{"iii-recorder": "exit recorder"}.get(k, k)] += \
                        memory_kib(child)[1] / 1024
    return dict(pss)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK


def rss_mib(pid: int) -> float:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def list_ms(daemon: DaemonProcess) -> float:
    times = []
    for _ in range(LIST_RUNS):
        t0 = time.perf_counter()
        out = subprocess.run([III_CLI, "worker", "list", "--json"], env=daemon.env,
                             capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
        json.loads(out.stdout)
    return statistics.median(times) * 1000


@dataclass
class Figures:
    up: float  # engine listening -> all running, s
    pss: dict[str, float]  # MiB summed over the workers, by process kind
    rss: float  # daemon, MiB
    idle: float  # daemon CPU %, all idle
    list: float  # iii worker list --json, ms
    stop: float = 0.0  # daemon stop -> every sandbox gone, s


def measure(home: Path, image: str, count: int, backend: str) -> Figures:
    names = [f"s{i}" for i in range(count)]
    entries = [f"  - name: {n}\n    worker_path: "
               f"{make_shell_project(home, image, n, start='exec sleep 100000')}\n"
               for n in names]
    (home / "config.yaml").write_text("workers:\n" + "".join(entries))
    engine = EngineProcess()
    daemon = DaemonProcess(home, III_URL=engine.url, III_NETWORK_BACKEND=backend).start()
    assert daemon.proc is not None
    try:
        engine.start()
        up = until(lambda: running(daemon) == count, f"{count} workers running")
        pss = memory(home, names)
        pid = daemon.proc.pid
        before = cpu_s(pid)
        time.sleep(IDLE_WINDOW_S)  # bench only: the idle window itself is what is measured
        idle = (cpu_s(pid) - before) / IDLE_WINDOW_S * 100
        figures = Figures(up=up, pss=pss, rss=rss_mib(pid), idle=idle, list=list_ms(daemon))
        t0 = time.perf_counter()
        daemon.stop()
        until(lambda: not any(launchers_of(home, n) for n in names), "every sandbox gone")
        figures.stop = time.perf_counter() - t0
        return figures
    finally:
        daemon.stop()
        kill_sandboxes(home)
        engine.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    os.environ.pop("III_SOCKET", None)
    results = {}
    with RegistryServer() as registry:
        push_image(registry.access, "bench/busybox", "latest", busybox_layers())
        image = f"{registry.host}/bench/busybox:latest"
        for count in (args.count // 2, args.count):
            with tempfile.TemporaryDirectory(prefix="iiib-", dir="/tmp") as tmp:
                results[count] = measure(Path(tmp), image, count, args.backend)
    half, full = results[args.count // 2], results[args.count]
    print(f"scale, network_backend {args.backend}, uid {os.geteuid()}, load average "
          f"{os.getloadavg()[0]:.1f}; {args.count // 2} workers | {args.count} workers | ratio")

    def row(label: str, a: float, b: float, unit: str, goal: str = "") -> None:
        print(f"  {label:34s} {a:8.2f} {unit:4s} | {b:8.2f} {unit:4s} | {b / a if a else 0:5.2f}x"
              f"  {goal}")
    n, m = args.count // 2, args.count
    row("engine up -> all running", half.up, full.up, "s", "(goal <= 10 s at 100, linear)")
    for key in sorted(full.pss):
        row(f"PSS per worker: {key}", half.pss.get(key, 0) / n, full.pss[key] / m, "MiB")
    sandbox = [k for k in full.pss if k != "workload"]
    row("PSS per worker, all but the workload", sum(half.pss.get(k, 0) for k in sandbox) / n,
        sum(full.pss[k] for k in sandbox) / m, "MiB", "(goal <= 12 MiB as root)")
    row("daemon RSS", half.rss, full.rss, "MiB", "(goal <= 100 MiB)")
    row("daemon CPU, all idle", half.idle, full.idle, "%", "(goal <= 1 %)")
    row("iii worker list --json, engine up", half.list, full.list, "ms", "(goal <= 100 ms)")
    row("daemon stop -> every sandbox gone", half.stop, full.stop, "s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
