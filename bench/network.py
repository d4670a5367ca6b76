"""The sandbox's own network (issues 11, 22): what each way of connecting it costs, beside the
host network's figure of the same run, never asserted.

Every variant runs the policy a daemon gives by default (``egress``, the engine's port
forwarded) and, as root, on shifted ids as a root daemon's sandboxes do:

(e) warm start to the first output line, interleaved runs, medians: host network, ``none``,
    the bridge (root only; with another sandbox holding the bridge, as in a daemon running
    workers; the first sandbox's start, which makes the bridge and its table, separately),
    pasta, slirp4netns. Goal (bridge): <= host + 10 ms.
(f) memory per running worker by PSS: launcher + exit recorder + sandbox init (+ the helper).
    Goal (bridge): <= 1.1x the host network's.

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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec

from bench.launcher import children, memory_kib, sandbox_params, stop, wait_for_line
from tests.support.rootfs import make_busybox_rootfs
from vmm_ffi.launch import spawn_launcher
from vmm_ffi.network import bridge as br
from vmm_ffi.network.helper import find_pasta, find_slirp4netns, tun_problem
from vmm_ffi.params import BridgeParams, IdShift, LaunchResult, NetworkPolicy

SHIFT = IdShift(uid_base=3_400_000, gid_base=3_400_000)
ENGINE_PORT = 49134


def variants(base: Path) -> dict[str, dict[str, Any]]:
    """name -> LaunchParams overrides, for what this machine has."""
    shift = {"id_shift": SHIFT} if os.geteuid() == 0 else {}
    policy = NetworkPolicy(engine_port=ENGINE_PORT)
    out: dict[str, dict[str, Any]] = {"host": dict(shift),
                                      "none": {"network": "none", **shift,
                                               "policy": NetworkPolicy(mode="none")}}
    if os.geteuid() == 0 and br.shutil.which("nft", path=br.SEARCH_PATH):
        out["bridge"] = {"network": "bridge", "policy": policy, **shift,
                         "bridge": BridgeParams(state_dir=str(base / "network"),
                                                tag=br.tag_of(str(base)))}
    if tun_problem() is None:
        for name, binary in (("pasta", find_pasta()), ("slirp4netns", find_slirp4netns())):
            if binary is not None:
                out[name] = {"network": name, name: binary, "policy": policy, **shift}
    return out


def start(base: Path, lower: Path, i: int, overrides: dict[str, Any]) -> tuple[float,
                                                                             LaunchResult]:
    params = msgspec.structs.replace(sandbox_params(base, lower, i), **overrides)
    t0 = time.perf_counter()
    result = spawn_launcher(params, Path(params.exit_path).parent)
    wait_for_line(params.log_path)
    return time.perf_counter() - t0, result


def pss_mib(result: LaunchResult) -> tuple[float, int]:
    """PSS of the launcher's own processes (workload excluded) and how many there are."""
    pids = [result.pid, *children(result.pid)]
    return sum(memory_kib(p)[1] for p in pids) / 1024, len(pids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="iii-bench-net-") as tmp:
        base = Path(tmp)
        lower = make_busybox_rootfs(base / "image")
        kinds = variants(base)
        counter = iter(range(10**6))
        first_bridge: list[float] = []
        if "bridge" in kinds:  # the first sandbox makes the bridge and its table
            for _ in range(3):
                elapsed, result = start(base, lower, next(counter), kinds["bridge"])
                first_bridge.append(elapsed)
                stop(result)
        anchor = None
        if "bridge" in kinds:  # a running worker holds the bridge from here on
            anchor = start(base, lower, next(counter), kinds["bridge"])[1]
        try:
            for overrides in kinds.values():  # warm the caches of each path once
                stop(start(base, lower, next(counter), overrides)[1])
            times: dict[str, list[float]] = {name: [] for name in kinds}
            for _ in range(args.runs):  # interleaved: load swings hit every variant alike
                for name, overrides in kinds.items():
                    elapsed, result = start(base, lower, next(counter), overrides)
                    times[name].append(elapsed)
                    stop(result)
            memory = {}
            for name, overrides in kinds.items():
                _, result = start(base, lower, next(counter), overrides)
                try:
                    memory[name] = pss_mib(result)
                finally:
                    stop(result)
        finally:
            if anchor is not None:
                stop(anchor)
        host = statistics.median(times["host"])
        host_pss = memory["host"][0]
        print(f"(e) warm start to first output line, median of {args.runs} interleaved runs "
              f"(load average {os.getloadavg()[0]:.1f}); (f) PSS per worker, workload excluded")
        for name in kinds:
            t = statistics.median(times[name])
            pss, n = memory[name]
            print(f"  {name:12s} {t * 1000:6.1f} ms ({t / host:.2f}x, {(t - host) * 1000:+.1f} ms)"
                  f"   PSS {pss:5.1f} MiB ({pss / host_pss:.2f}x, {n} processes)")
        if first_bridge:
            print(f"  the first sandbox on a new bridge (makes bridge + table, removed after): "
                  f"median {statistics.median(first_bridge) * 1000:.1f} ms")
        if "bridge" in kinds:
            t = statistics.median(times["bridge"])
            print(f"  goals (bridge): start <= host + 10 ms: {'met' if t - host <= 0.010 else 'NOT met'}"
                  f"; PSS <= 1.1x host: {'met' if memory['bridge'][0] <= 1.1 * host_pss else 'NOT met'}")
        print(f"  leftovers of the bench's bridge: {leftovers(base)}")
    return 0


def leftovers(base: Path) -> str:
    tag = br.tag_of(str(base))
    links = [x for x in os.listdir("/sys/class/net") if tag in x]
    return "none" if not links else ", ".join(links)


if __name__ == "__main__":
    sys.exit(main())
