"""Launcher benchmarks (issue 4, items c and d; issue 11: e), printed, never asserted.

(c) warm start to the worker's first output line with the namespace backend (median of N),
    against spawning the same command with plain ``subprocess`` (goal <= 150 ms absolute);
(d) launcher memory per running worker: RSS (and PSS, which splits pages shared between the
    launcher and its forked init fairly) of the launcher's own processes, workload excluded
    (goal <= 20 MiB);
(e) the start of (c) with and without no_new_privs + the seccomp filter (interleaved, median of
    N each), as a ratio in the same run: the filter's cost (goal: still <= 150 ms with it).

Run: ``.venv/bin/python bench/launcher.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.rootfs import make_busybox_rootfs
from vmm_ffi.cgroups.limits import CGROUP_ROOT_ENV
from vmm_ffi.launch import spawn_launcher
from vmm_ffi.params import LaunchParams, LaunchResult, OverlayRoot

COMMAND = ["sh", "-c", "echo first-line; exec sleep 1000"]
FIRST_LINE = b"first-line\n"
POLL_S = 0.0005
LINE_TIMEOUT_S = 10.0


def sandbox_params(base: Path, lower: Path, i: int, *, seccomp: bool = True) -> LaunchParams:
    d = base / f"s{i}"
    for sub in ("upper", "work", "merged"):
        (d / sub).mkdir(parents=True)
    return LaunchParams(
        name=f"bench{i}", backend="namespace",
        rootfs=OverlayRoot(lower=[str(lower)], upper=str(d / "upper"), work=str(d / "work")),
        merged=str(d / "merged"), argv=COMMAND, env={"PATH": "/bin"}, workdir="/",
        log_path=str(d / "worker.log"), exit_path=str(d / "exit.json"), seccomp=seccomp)


def wait_for_line(path: str) -> None:
    deadline = time.monotonic() + LINE_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                if FIRST_LINE in f.read():
                    return
        except FileNotFoundError:
            pass
        time.sleep(POLL_S)  # bench only: polling the log is what a log tail does
    raise TimeoutError(f"no first line in {path}")


def stop(result: LaunchResult) -> float:
    """SIGTERM the sandbox, reap it; return the CPU seconds (user+sys) it used in all."""
    os.kill(result.pid, signal.SIGTERM)
    _, _, usage = os.wait4(result.pid, 0)
    return usage.ru_utime + usage.ru_stime


def time_sandbox(base: Path, lower: Path, i: int, *, seccomp: bool = True,
                 env: dict[str, str] | None = None) -> tuple[float, LaunchResult]:
    params = sandbox_params(base, lower, i, seccomp=seccomp)
    t0 = time.perf_counter()
    result = spawn_launcher(params, Path(params.exit_path).parent, extra_env=env)
    wait_for_line(params.log_path)
    return time.perf_counter() - t0, result


def time_subprocess(lower: Path) -> float:
    argv = [str(lower / "bin/busybox"), *COMMAND]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env={"PATH": f"{lower}/bin"})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - t0
    assert line == FIRST_LINE, line
    proc.terminate()
    proc.wait()
    proc.stdout.close()
    return elapsed


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (for counting a sandbox's processes)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB."""
    rss = pss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="iii-bench-launch-") as tmp:
        base = Path(tmp)
        lower = make_busybox_rootfs(base / "image")
        _, warm = time_sandbox(base, lower, 0)  # warm caches and imports on both sides
        stop(warm)
        time_subprocess(lower)
        # "Without limits": the launcher looks for cgroups in an empty directory, finds none.
        (base / "no-cgroups").mkdir()
        no_limits = {CGROUP_ROOT_ENV: str(base / "no-cgroups")}
        sandbox_times, plain_times, cpu_times, unlimited_times = [], [], [], []
        limits = "?"
        for i in range(1, args.runs + 1):
            elapsed, result = time_sandbox(base, lower, i)
            limits = result.limits
            sandbox_times.append(elapsed)
            cpu_times.append(stop(result))
            plain_times.append(time_subprocess(lower))
            elapsed, result = time_sandbox(base, lower, 1000 + i, no_limits)
            unlimited_times.append(elapsed)
            stop(result)
        ours, theirs = statistics.median(sandbox_times), statistics.median(plain_times)
        print(f"(c) warm start to first output line, median of {args.runs}: "
              f"namespace sandbox {ours * 1000:.1f} ms, plain subprocess "
              f"{theirs * 1000:.1f} ms, ratio {ours / theirs:.1f}x "
              f"(goal <= 150 ms: {'met' if ours <= 0.150 else 'NOT met'}); CPU per sandbox "
              f"start+stop {statistics.median(cpu_times) * 1000:.1f} ms (less sensitive to load "
              f"from other processes; load average now {os.getloadavg()[0]:.1f})")
        # (e) the same start without no_new_privs + seccomp, interleaved run for run
        filtered, unfiltered = [], []
        for i in range(args.runs):
            for flag, times in ((True, filtered), (False, unfiltered)):
                elapsed, result = time_sandbox(base, lower, 1000 + 2 * i + flag, seccomp=flag)
                times.append(elapsed)
                stop(result)
        on, off = statistics.median(filtered), statistics.median(unfiltered)
        print(f"(e) seccomp filter cost, warm start to first output line, median of "
              f"{args.runs}: with {on * 1000:.1f} ms, without {off * 1000:.1f} ms, ratio "
              f"{on / off:.2f}x (goal <= 150 ms with it: {'met' if on <= 0.150 else 'NOT met'})")
        bare = statistics.median(unlimited_times)
        print(f"(c') the same start with resource limits ({limits}) {ours * 1000:.1f} ms vs "
              f"without {bare * 1000:.1f} ms (no cgroups found), ratio {ours / bare:.2f}x")
        _, result = time_sandbox(base, lower, args.runs + 1)
        try:
            parts = {"launcher": memory_kib(result.pid),
                     "sandbox init": memory_kib(result.sandbox_pid)}
        finally:
            stop(result)
        rss = sum(r for r, _ in parts.values()) / 1024
        pss = sum(p for _, p in parts.values()) / 1024
        detail = ", ".join(f"{k} RSS {r / 1024:.1f} MiB / PSS {p / 1024:.1f} MiB"
                           for k, (r, p) in parts.items())
        print(f"(d) launcher memory per running worker: RSS {rss:.1f} MiB, PSS {pss:.1f} MiB "
              f"({detail}; goal <= 20 MiB: {'met' if pss <= 20 else 'NOT met'} by PSS, "
              f"{'met' if rss <= 20 else 'NOT met'} by RSS)")


if __name__ == "__main__":
    main()
