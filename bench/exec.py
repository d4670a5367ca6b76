"""``iii worker exec -- true`` round trip vs ``nsenter`` into the same namespaces (issue 14,
goal <= 1.5x), on a real daemon and sandbox, interleaved; also the daemon's part alone (the
request from this running process) and ``python -c pass`` (the floor of any Python CLI).
Printed only.

    python -m bench exec
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.rpc_client import RpcClient
from tests.support.daemon import III_CLI, DaemonProcess, kill_sandboxes
from tests.support.images import busybox_layers, push_image
from tests.support.projects import make_shell_project
from tests.support.registry import RegistryServer

RUNS = 30


def wall(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def in_process(socket_path: Path) -> float:
    """The daemon's part alone: a worker.exec request from this (already running) process."""
    with open(os.devnull, "r+b") as null:
        fds = [null.fileno()] * 3
        start = time.perf_counter()
        with RpcClient(socket_path, autostart=False) as client:
            result = client.call("worker.exec", {"name": "box", "argv": ["true"], "env": {}},
                                 fds=fds)
        took = time.perf_counter() - start
    assert result["exit_code"] == 0, result
    return took


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
            socket_path = home / "iii.sock"
            in_process(socket_path)  # the first exec starts the daemon's fork server
            cli = [III_CLI, "worker", "exec", "box", "--", "true"]
            nsenter = ["nsenter", "-t", sandbox_pid, "-U", "-m", "-u", "-i", "-n", "-p",
                       "--preserve-credentials", "true"]
            floor = [sys.executable, "-c", "pass"]
            times: dict[str, list[float]] = {"cli": [], "nsenter": [], "daemon": [], "floor": []}
            for _ in range(RUNS):  # interleaved: a busy machine slows all of them alike
                times["cli"].append(wall(cli, daemon.env))
                times["nsenter"].append(wall(nsenter))
                times["daemon"].append(in_process(socket_path))
                times["floor"].append(wall(floor))
            ours, theirs, served, python = (statistics.median(times[k]) * 1000 for k in
                                            ("cli", "nsenter", "daemon", "floor"))
            print(f"exec -- true, median of {RUNS}: iii worker exec {ours:.1f} ms vs nsenter "
                  f"{theirs:.1f} ms, ratio {ours / theirs:.1f}x (goal <= 1.5x: "
                  f"{'met' if ours <= 1.5 * theirs else 'NOT met'})")
            print(f"  the daemon's part (request to exit code, from a running process): "
                  f"{served:.1f} ms, ratio {served / theirs:.1f}x")
            print(f"  python -c pass alone: {python:.1f} ms, {python / theirs:.1f}x nsenter: "
                  "no Python client can reach 1.5x")
        finally:
            daemon.stop()
            kill_sandboxes(home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
