"""Every runtime kind of SPEC §3-§4 end to end, like the Python worker: each example on its real
SDK (the Node ``iii-sdk`` from the npm registry, installed by the worker's own install script
inside a namespace sandbox), its default image served from a real registry as a Docker Hub
mirror, and the stand-in engine (TESTING.md)."""

from __future__ import annotations

import contextlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.engine import invoke_blocking
from tests.support.fixtures import push_built_image
from tests.support.images import BUN, NODE, RUST, ImageRecipe, build_image, image_cached
from tests.support.registry import RegistryServer
from tests.support.wait import wait_until

# The first test of a fresh machine also builds the images (minutes), a loaded one installs slowly.
pytestmark = pytest.mark.timeout(900)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# npm/yarn/pnpm install of iii-sdk + tsx through the proxy on a shared 2-core machine.
FIRST_START_S = 240.0
WARM_START_S = 60.0

# The default images of SPEC §3, each under the repository name Docker Hub would serve it as.
IMAGES: dict[str, tuple[ImageRecipe, str, str]] = {
    "node": (NODE, "iiidev/node", "latest"),
    "bun": (BUN, "oven/bun", "latest"),
    "rust": (RUST, "library/rust", "slim-bookworm"),
}


@dataclass(frozen=True)
class SdkExample:
    """An example worker that registers ``examples::greet`` with the engine."""

    directory: str
    image: str
    source: str  # the file the warm-start check edits
    greeting: str  # how the source spells the greeting, replaced by "Hi"


SDK_EXAMPLES = [
    SdkExample("ts-worker", "node", "src/index.ts", "process.env.GREETING ?? 'Hello'"),
    SdkExample("js-yarn-worker", "node", "index.js", "process.env.GREETING ?? 'Hello'"),
    SdkExample("js-pnpm-worker", "node", "index.js", "process.env.GREETING ?? 'Hello'"),
    SdkExample("bun-worker", "bun", "src/index.ts", "process.env.GREETING ?? 'Hello'"),
]


@pytest.fixture(scope="module")
def pushed(registry: RegistryServer) -> dict[str, str]:
    """Images pushed so far, by IMAGES key (each pushed on first use, built once per machine).

    A fresh machine (CI's first run) builds the missing images side by side first: debootstrap
    and the npm downloads wait on the network much of the time, so this saves minutes."""
    missing = [r for r, _, _ in IMAGES.values() if not image_cached(r)]
    if os.geteuid() == 0 and len(missing) > 1:
        with ThreadPoolExecutor(len(missing)) as pool:
            for future in [pool.submit(build_image, r) for r in missing]:
                with contextlib.suppress(OSError):  # push_built_image skips with the reason
                    future.result()
    return {}


def mirror_with(registry: RegistryServer, pushed: dict[str, str], image: str) -> str:
    if image not in pushed:
        recipe, repo, tag = IMAGES[image]
        pushed[image] = push_built_image(registry, recipe, repo, tag)
    return registry.host


@pytest.mark.parametrize("example", SDK_EXAMPLES, ids=[e.directory for e in SDK_EXAMPLES])
def test_sdk_worker_lifecycle(example: SdkExample, daemon_factory, engine_factory,
                              registry: RegistryServer, pushed: dict[str, str], iii_home: Path,
                              tmp_path: Path) -> None:
    mirror = mirror_with(registry, pushed, example.image)
    name = example.directory
    project = tmp_path / name
    shutil.copytree(EXAMPLES / name, project)
    engine = engine_factory()
    daemon = daemon_factory(III_URL=engine.url, III_REGISTRY_MIRROR=mirror)
    wait_until(lambda: daemon.json("daemon", "status")["engine"]["reachable"], 5, "engine up")

    added = daemon.json("worker", "add", str(project))
    assert added["started"] is True
    wait_until(lambda: daemon.worker(name)["engine_registered"] is True, FIRST_START_S,
               f"the engine to list {name}")
    worker = daemon.worker(name)
    assert worker["status"] == "running" and worker["isolation"] == "namespace"
    assert worker["deps_installed"] is True
    assert invoke_blocking(engine.url, "examples::greet", {"name": "iii"}) == \
        {"message": "Hello, iii!"}

    stopped = daemon.json("worker", "stop", name)
    assert stopped["status"] == "stopped" and stopped["pid"] is None
    wait_until(lambda: daemon.worker(name)["engine_registered"] is False, 10,
               "the engine to drop the worker")

    # Warm start: the marker skips install, the edited source is re-synced and runs.
    source = project / example.source
    edited = source.read_text().replace(example.greeting, "'Hi'")
    assert edited != source.read_text()
    source.write_text(edited)
    started = daemon.iii("worker", "start", name)
    assert started.returncode == 0, started.stderr
    assert "skipping setup and install" in started.stdout + started.stderr
    wait_until(lambda: daemon.worker(name)["engine_registered"] is True, WARM_START_S,
               "re-registration")
    assert invoke_blocking(engine.url, "examples::greet", {"name": "iii"}) == \
        {"message": "Hi, iii!"}

    removed = daemon.json("worker", "remove", name)
    assert removed["removed"] is True
    assert name not in (iii_home / "config.yaml").read_text()


def test_rust_worker_builds_logs_and_stops(daemon_factory, engine_factory,
                                           registry: RegistryServer, pushed: dict[str, str],
                                           iii_home: Path, tmp_path: Path) -> None:
    """No crates registry is reachable here, so the Rust example is std-only and does not talk to
    the engine: it is built by ``cargo build --release`` in the sandbox, runs, logs its sandbox
    env and ends on SIGTERM."""
    mirror = mirror_with(registry, pushed, "rust")
    project = tmp_path / "rust-worker"
    shutil.copytree(EXAMPLES / "rust-worker", project)
    engine = engine_factory()
    daemon = daemon_factory(III_URL=engine.url, III_REGISTRY_MIRROR=mirror)

    added = daemon.json("worker", "add", str(project))
    assert added["started"] is True
    line = f"rust-worker: engine={engine.url} name=rust-worker isolation=namespace"
    wait_until(lambda: line in daemon.iii("worker", "logs", "rust-worker").stdout, FIRST_START_S,
               "the built binary's first line")
    worker = daemon.worker("rust-worker")
    assert worker["status"] == "running" and worker["deps_installed"] is True

    stopped = daemon.json("worker", "stop", "rust-worker")
    assert stopped["status"] == "stopped" and stopped["pid"] is None
    started = daemon.iii("worker", "start", "rust-worker")
    assert started.returncode == 0, started.stderr
    assert "skipping setup and install" in started.stdout + started.stderr
    wait_until(lambda: daemon.iii("worker", "logs", "rust-worker").stdout.count(line) == 2,
               WARM_START_S, "the second run's line")
    assert daemon.json("worker", "remove", "rust-worker")["removed"] is True
