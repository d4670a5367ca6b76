"""The seed's setup line in a sandbox vs the same commands in a plain chroot (issue 9).

``apt-get update && apt-get install -y build-essential`` on the debootstrap python image: once
in a namespace sandbox on the overlay root (``vmm_ffi.isolation.overlay``), once in ``chroot`` of a
``cp -a`` copy of the same rootfs with /dev, /proc and resolv.conf bound in (the baseline).
Goal: the sandbox takes <= 1.1x the baseline. The downloads go through the network, so the runs
are interleaved ABBA after one untimed warm-up of the baseline (the proxy's cache then serves
both sides alike).

Run: ``.venv/bin/python bench/setup_script.py [--runs N]`` (root: debootstrap and chroot).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.images import build_python_image, python_image_cached
from vmm_ffi.isolation.namespace import DEFAULT_PATH
from vmm_ffi.launch import read_exit, spawn_launcher
from vmm_ffi.params import BindMount, LaunchParams, OverlayRoot

SEED_SETUP = "apt-get update -qq && apt-get install -y -qq build-essential >/dev/null"
CHROOT_SCRIPT = """set -e
mount --rbind /dev "$1/dev"
mount -t proc proc "$1/proc"
mount --bind /etc/resolv.conf "$1/etc/resolv.conf"
exec chroot "$1" /bin/sh -c "$2"
"""


def extract(target: Path) -> Path:
    layer = build_python_image().layer
    assert layer.path is not None
    target.mkdir()
    subprocess.run(["tar", "--numeric-owner", "-xzf", str(layer.path), "-C", str(target)],
                   check=True)
    return target


def in_sandbox(base: Path, rootfs: Path, i: int) -> float:
    d = base / f"sandbox{i}"
    for sub in ("upper", "work", "merged"):
        (d / sub).mkdir(parents=True)
    params = LaunchParams(
        name=f"bench{i}", backend="namespace",
        rootfs=OverlayRoot(lower=[str(rootfs)], upper=str(d / "upper"), work=str(d / "work")),
        merged=str(d / "merged"), argv=["/bin/sh", "-c", SEED_SETUP],
        env={"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8"}, workdir="/",
        binds=[BindMount(source="/etc/resolv.conf", target="/etc/resolv.conf")],
        log_path=str(d / "worker.log"), exit_path=str(d / "exit.json"))
    t0 = time.perf_counter()
    result = spawn_launcher(params, d)
    os.waitpid(result.pid, 0)
    elapsed = time.perf_counter() - t0
    status = read_exit(params.exit_path)
    assert status is not None and status.exit_code == 0, (d / "worker.log").read_text()[-2000:]
    return elapsed


def in_chroot(base: Path, rootfs: Path, i: int) -> float:
    copy = base / f"chroot{i}"
    subprocess.run(["cp", "-a", "--", str(rootfs), str(copy)], check=True)  # not timed
    t0 = time.perf_counter()
    subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", CHROOT_SCRIPT,
                    "sh", str(copy), SEED_SETUP], check=True, capture_output=True,
                   env={"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8"})
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("skipped: needs root (debootstrap image, chroot baseline)")
        return 0
    if not python_image_cached():
        print("building the debootstrap python image first (about a minute)")
    with tempfile.TemporaryDirectory(prefix="iii-bench-setup-", dir="/var/tmp") as tmp:
        base = Path(tmp)
        rootfs = extract(base / "rootfs")
        in_chroot(base, rootfs, 99)  # warm-up: apt's downloads now cached alike for both
        sandbox: list[float] = []
        chroot: list[float] = []
        for i in range(args.runs):  # ABBA
            first, second = (sandbox, chroot) if i % 2 == 0 else (chroot, sandbox)
            for acc in (first, second):
                acc.append((in_sandbox if acc is sandbox else in_chroot)(base, rootfs, i))
            for leftover in base.glob("chroot[0-9]*"):
                shutil.rmtree(leftover, ignore_errors=True)
        s, c = sum(sandbox) / len(sandbox), sum(chroot) / len(chroot)
        print(f"seed setup line: sandbox {s:.1f} s, plain chroot {c:.1f} s, "
              f"ratio {s / c:.2f}x (goal <= 1.1x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
