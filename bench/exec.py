"""``iii worker exec -- true`` round trip vs ``nsenter`` into the same namespaces (issue 14,
goal <= 1.5x), on a real daemon and sandbox. Printed only.

    python -m bench exec
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.daemon import III_CLI, DaemonProcess, kill_sandboxes
from tests.support.images import busybox_layers, push_image
from tests.support.projects import make_shell_project
from tests.support.registry import RegistryServer

RUNS = 20


def median_wall(argv: list[str], env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    if shutil.which("nsenter") is None:
        print("skipped: nsenter (util-linux) is missing")
        return 0
    with tempfile.TemporaryDirectory(prefix="iii-bench-exec-") as tmp, RegistryServer() as reg:
        push_image(reg.access, "bench/busybox", "latest", busybox_layers())
        home = Path(tmp) / "home"
        home.mkdir()
        project = make_shell_project(Path(tmp), f"{reg.host}/bench/busybox:latest", "box",
                                     start="exec sleep 1000")
        daemon = DaemonProcess(home).start()
        try:
            daemon.json("worker", "add", str(project))
            daemon.json("worker", "start", "box")
            record = json.loads((home / "managed/box/launcher.pid").read_text())
            sandbox_pid = str(record["launch"]["sandbox_pid"])
            ours = median_wall([III_CLI, "worker", "exec", "box", "--", "true"], daemon.env)
            theirs = median_wall(["nsenter", "-t", sandbox_pid, "-U", "-m", "-u", "-i", "-n",
                                  "-p", "--preserve-credentials", "true"])
            print(f"exec -- true, median of {RUNS}: iii worker exec {ours * 1000:.1f} ms vs "
                  f"nsenter {theirs * 1000:.1f} ms, ratio {ours / theirs:.1f}x (goal <= 1.5x: "
                  f"{'met' if ours <= 1.5 * theirs else 'NOT met'}; the CLI's own start is "
                  "most of it)")
            floor = median_wall([sys.executable, "-c", "pass"])
            print(f"  for scale: python -c pass {floor * 1000:.1f} ms")
        finally:
            daemon.stop()
            kill_sandboxes(home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
