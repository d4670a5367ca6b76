"""``make demo``: the main job end to end.

Validates the bundled examples, then starts a daemon and the stand-in engine (TESTING.md) and
adds ``examples/ts-worker`` (the seed's default kind: TypeScript on the Node ``iii-sdk`` from npm)
and ``examples/python-worker`` (the Python ``iii-sdk`` from PyPI) side by side: each image pulled,
each sandbox provisioned, each SDK installed by the worker's own install script inside its
sandbox. It waits until the engine lists both, invokes each one's function, lists the workers,
prints the answers and removes them.

Docker Hub is often unreachable on build machines. Then the demo says so and serves the
examples' base images (``docker.io/iiidev/node:latest``, ``docker.io/iiidev/python:latest``)
itself: Debian images built with debootstrap (node from the npm registry), pushed to a local
registry that becomes ``III_REGISTRY_MIRROR``. Point ``III_REGISTRY_MIRROR=host:port`` at your own
registry to use that instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent
EXAMPLES = ("ts-worker", "js-yarn-worker", "js-pnpm-worker", "bun-worker", "python-worker",
            "rust-worker")
# What the demo runs, side by side: the seed's default kind and Python.
RUN = ("ts-worker", "python-worker")
DOCKER_HUB = ("registry-1.docker.io", 443)
REGISTRATION_TIMEOUT_S = 120.0


class DemoUnavailable(Exception):
    """The demo cannot run on this machine as it is; the message says what to do."""


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def docker_hub_reachable() -> bool:
    try:
        with socket.create_connection(DOCKER_HUB, timeout=3):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def image_mirror() -> Iterator[str | None]:
    """The mirror to use: the user's, none (Docker Hub works), or a local one we serve."""
    if os.environ.get("III_REGISTRY_MIRROR"):
        yield os.environ["III_REGISTRY_MIRROR"]
        return
    if docker_hub_reachable():
        yield None
        return
    from concurrent.futures import ThreadPoolExecutor

    from tests.support.images import NODE, PYTHON, build_image, image_cached, push_image
    from tests.support.registry import RegistryServer

    say("Docker Hub (registry-1.docker.io) is unreachable from this machine.")
    recipes = {"iiidev/node": NODE, "iiidev/python": PYTHON}
    if os.geteuid() != 0 and not all(image_cached(r) for r in recipes.values()):
        raise DemoUnavailable(
            "building local stand-ins for docker.io/iiidev/node:latest and "
            "docker.io/iiidev/python:latest needs root (debootstrap): run `make demo` as root "
            "once (the images are cached), or set III_REGISTRY_MIRROR=host:port to a registry "
            "that serves both")
    say("Serving docker.io/iiidev/node:latest and docker.io/iiidev/python:latest from a local "
        "registry instead (to use your own registry: III_REGISTRY_MIRROR=host:port make demo).")
    if not all(image_cached(r) for r in recipes.values()):
        say("building the images with debootstrap (about two minutes, cached afterwards)...")
    # Side by side: debootstrap and the npm downloads mostly wait on the network.
    with ThreadPoolExecutor(len(recipes)) as pool:
        built = dict(zip(recipes, pool.map(build_image, recipes.values()), strict=True))
    with RegistryServer() as registry:
        for repo, image in built.items():
            push_image(registry.access, repo, "latest", [image.layer], image.config)
        say(f"local mirror: {registry.host}")
        yield registry.host


def validate_examples(iii: list[str]) -> None:
    for example in EXAMPLES:
        say(f"iii worker validate examples/{example}")
        subprocess.run([*iii, "worker", "validate", str(EXAMPLES_DIR / example)], check=True)


def run_demo() -> int:
    from tests.support.daemon import III_CLI, DaemonProcess, kill_sandboxes
    from tests.support.engine import EngineProcess, invoke_blocking
    from tests.support.wait import wait_until

    validate_examples([III_CLI])
    with image_mirror() as mirror, tempfile.TemporaryDirectory(prefix="iii-demo-") as tmp:
        home = Path(tmp)
        engine = EngineProcess(log_path=home / "engine.log").start()
        env = {"III_URL": engine.url, **({"III_REGISTRY_MIRROR": mirror} if mirror else {})}
        daemon = DaemonProcess(home, **env)
        try:
            daemon.start()
            say(f"daemon up (III_HOME={home}), engine at {engine.url}")
            wait_until(lambda: daemon.json("daemon", "status")["engine"]["reachable"], 10,
                       "the engine")
            ok = True
            # One after the other, both left running: both serve examples::greet, and the engine
            # routes a function to the worker that registered it last, so each answers in turn.
            for name in RUN:
                say(f"iii worker add examples/{name}")
                added = daemon.iii("worker", "add", str(EXAMPLES_DIR / name))
                print(added.stdout + added.stderr, end="", flush=True)
                if added.returncode != 0:
                    return 1
                wait_until(lambda: daemon.worker(name)["engine_registered"] is True,  # noqa: B023
                           REGISTRATION_TIMEOUT_S, f"the engine to list {name}")
                answer = invoke_blocking(engine.url, "examples::greet", {"name": "demo"})
                say(f"{name}: examples::greet({{'name': 'demo'}}) -> {answer}")
                ok = ok and answer == {"message": "Hello, demo!"}
            print(daemon.iii("worker", "list").stdout, end="", flush=True)
            for name in RUN:
                removed = daemon.iii("worker", "remove", name)
                print(removed.stdout, end="", flush=True)
            return 0 if ok else 1
        finally:
            daemon.stop()
            kill_sandboxes(home)
            engine.stop()


def main() -> int:
    try:
        return run_demo()
    except (subprocess.CalledProcessError, TimeoutError, DemoUnavailable) as exc:
        print(f"demo: failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
