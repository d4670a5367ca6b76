"""The sandbox's own network (issue 11): what pasta costs, printed beside the host-network
figure of the same run, never asserted.

(e) warm start to the first output line: own netns + pasta (and slirp4netns, the second choice)
    vs the host's network (goal: still <= 150 ms);
(f) memory per running worker by PSS: launcher + sandbox init (+ pasta or slirp4netns), goal
    <= 20 MiB.

Run: ``.venv/bin/python bench/network.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.launcher import memory_kib, sandbox_params, stop, wait_for_line
from tests.support.rootfs import make_busybox_rootfs
from vmm_ffi.launch import spawn_launcher
from vmm_ffi.network import find_pasta, find_slirp4netns
from vmm_ffi.params import LaunchResult


def start(base: Path, lower: Path, i: int, pasta: str | None,
          slirp: str | None = None) -> tuple[float, LaunchResult]:
    params = sandbox_params(base, lower, i)
    if pasta is not None or slirp is not None:
        net = {"network": "pasta", "pasta": pasta} if pasta is not None else \
            {"network": "slirp4netns", "slirp4netns": slirp}
        params = params.__class__(**{**{f: getattr(params, f) for f in params.__struct_fields__},
                                     **net})
    t0 = time.perf_counter()
    result = spawn_launcher(params, Path(params.exit_path).parent)
    wait_for_line(params.log_path)
    return time.perf_counter() - t0, result


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def pss_mib(result: LaunchResult) -> tuple[float, int]:
    """PSS of the launcher's own processes (workload excluded) and how many there are."""
    pids = [result.pid, *[c for c in children(result.pid)]]
    return sum(memory_kib(p)[1] for p in pids) / 1024, len(pids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    pasta = find_pasta()
    if pasta is None:
        print("skipped: pasta (Debian passt) is not installed")
        return 0
    with tempfile.TemporaryDirectory(prefix="iii-bench-net-") as tmp:
        base = Path(tmp)
        lower = make_busybox_rootfs(base / "image")
        for warm in (None, pasta):
            stop(start(base, lower, 0 if warm is None else 1, warm)[1])
        times: dict[str, list[float]] = {"host": [], "pasta": []}
        for i in range(args.runs):  # interleaved: load swings hit both sides alike
            for name, net in (("host", None), ("pasta", pasta)):
                elapsed, result = start(base, lower, 10 + 2 * i + (net is not None), net)
                times[name].append(elapsed)
                stop(result)
        host, own = statistics.median(times["host"]), statistics.median(times["pasta"])
        print(f"(e) warm start to first output line, median of {args.runs}: own netns + pasta "
              f"{own * 1000:.1f} ms vs host network {host * 1000:.1f} ms, ratio "
              f"{own / host:.2f}x (goal <= 150 ms: {'met' if own <= 0.150 else 'NOT met'}; "
              f"load average {os.getloadavg()[0]:.1f})")
        figures = []
        for name, net in (("host", None), ("pasta", pasta)):
            _, result = start(base, lower, 1000 + (net is not None), net)
            try:
                figures.append((name, *pss_mib(result)))
            finally:
                stop(result)
        (_, host_pss, _), (_, own_pss, n) = figures
        print(f"(f) memory per running worker by PSS: own netns {own_pss:.1f} MiB "
              f"({n} processes: launcher, sandbox init, pasta) vs host network "
              f"{host_pss:.1f} MiB (goal <= 20 MiB: {'met' if own_pss <= 20 else 'NOT met'})")
        slirp = find_slirp4netns()
        if slirp is not None:
            slirp_times = []
            for i in range(args.runs):
                elapsed, result = start(base, lower, 2000 + i, None, slirp)
                slirp_times.append(elapsed)
                stop(result)
            _, result = start(base, lower, 3000, None, slirp)
            try:
                slirp_pss, n = pss_mib(result)
            finally:
                stop(result)
            slirp_start = statistics.median(slirp_times)
            print(f"(e') slirp4netns (second choice): warm start {slirp_start * 1000:.1f} ms "
                  f"(ratio {slirp_start / host:.2f}x the host network); (f') PSS "
                  f"{slirp_pss:.1f} MiB ({n} processes) vs host network {host_pss:.1f} MiB "
                  f"(goal <= 20 MiB: {'met' if slirp_pss <= 20 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
