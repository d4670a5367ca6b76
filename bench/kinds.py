"""Per runtime kind (issue: "every runtime kind runs for real", Measure). Printed only.

For each SDK example, with its image already built and pushed to a local registry (the image
cache of the daemon is warm after the first kind that uses it):

- ``add`` → first registration with the engine (first start: pull/extract if needed, provision,
  sync, install, start);
- warm ``start`` (after ``stop``; install skipped) → first registration;
- baselines outside any sandbox, on the host's own node: ``node -e`` importing the same SDK and
  registering (vs the plain-JS workers), and ``npx tsx`` on the TypeScript example (vs ts-worker),
  so the sandbox's share of a warm start shows as a ratio and a difference. Registration is read
  from the stand-in engine's ``engine::workers::list`` every 20 ms, for every row alike.

    python -m bench kinds [--runs N]

Needs root the first time (debootstrap images) and the npm registry (the host baseline installs
``iii-sdk`` with the host's npm). The host's node may be another major version than the image's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.daemon import DaemonProcess, kill_sandboxes
from tests.support.engine import EngineProcess, invoke_blocking
from tests.support.images import BUN, NODE, PYTHON, ImageRecipe, build_image, push_image
from tests.support.registry import RegistryServer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# example → (image recipe, repository as Docker Hub names it)
KINDS: dict[str, tuple[ImageRecipe, str]] = {
    "ts-worker": (NODE, "iiidev/node"),
    "js-yarn-worker": (NODE, "iiidev/node"),
    "js-pnpm-worker": (NODE, "iiidev/node"),
    "bun-worker": (BUN, "oven/bun"),
    "python-worker": (PYTHON, "iiidev/python"),
}
REGISTRATION_TIMEOUT_S = 300.0
POLL_S = 0.02
SDK_VERSION = "0.22.1"
NODE_BASELINE = (
    "import('iii-sdk').then(({registerWorker}) => {"
    " const iii = registerWorker(process.env.III_URL, {workerName: process.env.III_WORKER_NAME});"
    " iii.registerFunction('examples::greet', async () => ({message: 'hi'})) })")


def registered(engine_url: str, name: str) -> bool:
    answer: Any = invoke_blocking(engine_url, "engine::workers::list", {})
    return any(w.get("name") == name for w in answer.get("workers", []))


def time_to_registration(engine_url: str, name: str, action: list[str] | None,
                         daemon: DaemonProcess | None = None,
                         proc_args: tuple[list[str], Path, dict[str, str]] | None = None
                         ) -> tuple[float, subprocess.Popen[bytes] | None]:
    """Seconds from running ``action`` (a CLI call) or spawning ``proc_args`` to ``name`` being
    listed by the engine."""
    started = time.perf_counter()
    proc = None
    if action is not None:
        assert daemon is not None
        result = daemon.iii(*action, timeout=REGISTRATION_TIMEOUT_S)
        if result.returncode != 0:
            raise RuntimeError(f"iii {' '.join(action)}: {result.stderr.strip()}")
    else:
        assert proc_args is not None
        argv, cwd, env = proc_args
        # Own session: npx's node child must end with it (see host_baseline).
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = started + REGISTRATION_TIMEOUT_S
    while not registered(engine_url, name):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{name} did not register within {REGISTRATION_TIMEOUT_S}s")
        time.sleep(POLL_S)
    return time.perf_counter() - started, proc


def wait_unregistered(engine_url: str, name: str) -> None:
    deadline = time.monotonic() + 30
    while registered(engine_url, name) and time.monotonic() < deadline:
        time.sleep(POLL_S)


def host_baseline(engine_url: str, tmp: Path, runs: int) -> dict[str, float]:
    """Median time to registration outside any sandbox: plain ``node -e`` and ``npx tsx``."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        print("  host baseline skipped: no node/npm on this host")
        return {}
    project = tmp / "host-ts-worker"
    shutil.copytree(EXAMPLES / "ts-worker", project)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=project,
                   check=True, stdout=subprocess.DEVNULL)
    version = subprocess.run(["node", "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    print(f"  host baseline on node {version} (iii-sdk {SDK_VERSION}, tsx from ts-worker)")
    out: dict[str, float] = {}
    argvs = {"node -e": ["node", "--input-type=module", "-e", NODE_BASELINE],
             "npx tsx": ["npx", "tsx", "src/index.ts"]}
    for label, argv in argvs.items():
        times = []
        for i in range(runs):
            name = f"host-{i}"
            env = {**os.environ, "III_URL": engine_url, "III_WORKER_NAME": name}
            elapsed, proc = time_to_registration(engine_url, name, None,
                                                 proc_args=(argv, project, env))
            assert proc is not None
            os.killpg(proc.pid, signal.SIGTERM)  # npx → tsx → node: the whole group
            proc.wait(10)
            wait_unregistered(engine_url, name)
            times.append(elapsed)
        out[label] = statistics.median(times)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3, help="warm starts per kind (median)")
    parser.add_argument("kinds", nargs="*", default=list(KINDS))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench kinds: skipped, building the debootstrap images needs root")
        return 0
    with RegistryServer() as registry, tempfile.TemporaryDirectory(prefix="iii-bench-") as tmp:
        pushed = set()
        for name in args.kinds:
            recipe, repo = KINDS[name]
            if repo not in pushed:
                built = build_image(recipe)
                push_image(registry.access, repo, "latest", [built.layer], built.config)
                pushed.add(repo)
        home = Path(tmp) / "home"
        home.mkdir()
        engine = EngineProcess(log_path=Path(tmp) / "engine.log").start()
        daemon = DaemonProcess(home, III_URL=engine.url, III_REGISTRY_MIRROR=registry.host)
        rows: dict[str, tuple[float, float]] = {}
        try:
            daemon.start()
            for name in args.kinds:
                project = Path(tmp) / name
                shutil.copytree(EXAMPLES / name, project,
                                ignore=shutil.ignore_patterns("node_modules"))
                first, _ = time_to_registration(engine.url, name, ["worker", "add", str(project)],
                                                daemon)
                warm = []
                for _ in range(args.runs):
                    daemon.iii("worker", "stop", name)
                    wait_unregistered(engine.url, name)
                    elapsed, _ = time_to_registration(engine.url, name,
                                                      ["worker", "start", name], daemon)
                    warm.append(elapsed)
                daemon.iii("worker", "remove", name)
                rows[name] = (first, statistics.median(warm))
                print(f"  {name:15s} add→registered {first:6.2f} s   warm start→registered "
                      f"{rows[name][1]:6.2f} s (median of {args.runs})", flush=True)
            base = host_baseline(engine.url, Path(tmp), args.runs)
        finally:
            daemon.stop()
            kill_sandboxes(home)
            engine.stop()
    pairs = [("node -e", n) for n in ("js-yarn-worker", "js-pnpm-worker") if n in rows]
    pairs += [("npx tsx", "ts-worker")] if "ts-worker" in rows else []
    for label, name in pairs:
        if label in base:
            warm = rows[name][1]
            # yarn/pnpm rows include the package manager's own start (`yarn start` → node).
            print(f"  {name} warm start vs host `{label}` ({base[label]:.2f} s): "
                  f"{warm / base[label]:.2f}x, +{1000 * (warm - base[label]):.0f} ms "
                  "(goal: the sandbox adds ≤ 150 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
