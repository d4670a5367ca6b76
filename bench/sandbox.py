"""Sandbox benchmarks (issue 4, items a and b), printed as ratios against a baseline run here.

(a) provisioning a sandbox root from a cached 20,000-file image rootfs vs ``cp -a`` of it
    (goal <= 0.01);
(b) re-sync of an unchanged 10,000-file project into /workspace vs ``rsync -a`` (goal <= 1.0).

Run: ``.venv/bin/python bench/sandbox.py [--runs N]``. Timings are medians of N runs with a
warm page cache for both sides.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.sandboxes.layout import SandboxLayout
from daemon.sandboxes.provision import Provisioner
from daemon.sandboxes.sync import sync_project


def make_tree(root: Path, files: int, per_dir: int = 100, size: int = 512) -> Path:
    """``files`` small files spread over directories of ``per_dir``, a few symlinks."""
    payload = os.urandom(size)
    for i in range(files):
        d = root / f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.txt").write_bytes(payload)
    (root / "link").symlink_to("d0000/f00000.txt")
    return root


def median_times(fns: list[Callable[[int], None]], runs: int) -> list[float]:
    """Median time of each function; runs interleaved so load swings hit every side alike."""
    times: list[list[float]] = [[] for _ in fns]
    for i in range(runs):
        for fn, acc in zip(fns, times):
            t0 = time.perf_counter()
            fn(i)
            acc.append(time.perf_counter() - t0)
    return [statistics.median(acc) for acc in times]


def bench_provision(tmp: Path, runs: int) -> tuple[float, float, str]:
    image = make_tree(tmp / "image", 20_000)
    home = tmp / "home"
    provisioner = Provisioner(home)
    decision = provisioner.decision()  # probed once per daemon; not part of a provisioning

    def provision(i: int) -> None:
        provisioner.provision(SandboxLayout(home, f"w{i}"), image)

    def cp(i: int) -> None:
        subprocess.run(["cp", "-a", str(image), str(tmp / f"cp{i}")], check=True)

    subprocess.run(["cp", "-a", str(image), str(tmp / "warm")], check=True)  # warm the cache
    ours, base = median_times([provision, cp], runs)
    return ours, base, f"{decision.mode.value} ({decision.reason})"


def bench_resync(tmp: Path, runs: int) -> tuple[float, float, float]:
    """(ours as the daemon runs it, ours without the sync record, rsync -a)."""
    project = make_tree(tmp / "project", 10_000)
    workspace = tmp / "upper" / "workspace"
    (tmp / "upper").mkdir()
    state = tmp / "sync-state"  # the daemon keeps it at managed/<name>/sync-state
    sync_project(project, workspace, state)
    rsync_dst = tmp / "rsync-dst"
    subprocess.run(["rsync", "-a", f"{project}/", f"{rsync_dst}/"], check=True)

    def ours(_: int) -> None:
        stats = sync_project(project, workspace, state)
        assert stats.copied == 0 and stats.deleted == 0, stats

    def ours_no_record(_: int) -> None:
        stats = sync_project(project, workspace)
        assert stats.copied == 0 and stats.deleted == 0, stats

    def rsync(_: int) -> None:
        subprocess.run(["rsync", "-a", f"{project}/", f"{rsync_dst}/"], check=True)

    a, b, c = median_times([ours, ours_no_record, rsync], runs)
    return a, b, c


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    for tool in ("cp", "rsync"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed (apt-get install {tool})", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="iii-bench-") as tmp:
        base = Path(tmp)
        (base / "a").mkdir()
        ours, cp, mode = bench_provision(base / "a", args.runs)
        print(f"(a) provision from a 20,000-file cached rootfs: {ours * 1000:.2f} ms "
              f"[{mode}] vs cp -a {cp * 1000:.1f} ms -> ratio {ours / cp:.4f} (goal <= 0.01)")
        (base / "b").mkdir()
        ours, no_record, rs = bench_resync(base / "b", args.runs)
        print(f"(b) re-sync of an unchanged 10,000-file project: {ours * 1000:.1f} ms vs "
              f"rsync -a {rs * 1000:.1f} ms -> ratio {ours / rs:.3f} (goal <= 1.0); "
              f"without the sync record {no_record * 1000:.1f} ms (ratio {no_record / rs:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
