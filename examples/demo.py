"""``make demo``: the main job end to end.

Validates the bundled examples, then starts a daemon and the stand-in engine (TESTING.md), adds
``examples/python-worker`` (its image pulled, its sandbox provisioned, ``iii-sdk`` installed by
its own install script inside the sandbox), waits until the engine lists it, invokes its
function, prints the answer and cleans up.

Docker Hub is often unreachable on build machines. Then the demo says so and serves the
example's base image (``docker.io/iiidev/python:latest``) itself: a Debian image built with
debootstrap, pushed to a local registry that becomes ``III_REGISTRY_MIRROR``. Point
``III_REGISTRY_MIRROR=host:port`` at your own registry to use that instead.
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
EXAMPLES = ("python-worker", "ts-worker", "rust-worker")
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
    from tests.support.images import build_python_image, push_image, python_image_cached
    from tests.support.registry import RegistryServer

    say("Docker Hub (registry-1.docker.io) is unreachable from this machine.")
    if os.geteuid() != 0 and not python_image_cached():
        raise DemoUnavailable(
            "building a local stand-in for docker.io/iiidev/python:latest needs root "
            "(debootstrap): run `make demo` as root once (the image is cached), or set "
            "III_REGISTRY_MIRROR=host:port to a registry that serves iiidev/python:latest")
    say("Serving docker.io/iiidev/python:latest from a local registry instead "
        "(to use your own registry: III_REGISTRY_MIRROR=host:port make demo).")
    say("building the image with debootstrap (about a minute, cached afterwards)...")
    built = build_python_image()
    with RegistryServer() as registry:
        push_image(registry.access, "iiidev/python", "latest", [built.layer], built.config)
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
            say("iii worker add examples/python-worker")
            added = daemon.iii("worker", "add", str(EXAMPLES_DIR / "python-worker"))
            print(added.stdout + added.stderr, end="", flush=True)
            if added.returncode != 0:
                return 1
            wait_until(lambda: daemon.worker("python-worker")["engine_registered"] is True,
                       REGISTRATION_TIMEOUT_S, "the engine to list python-worker")
            print(daemon.iii("worker", "list").stdout, end="", flush=True)
            answer = invoke_blocking(engine.url, "examples::greet", {"name": "demo"})
            say(f"examples::greet({{'name': 'demo'}}) -> {answer}")
            removed = daemon.iii("worker", "remove", "python-worker")
            print(removed.stdout, end="", flush=True)
            return 0 if answer == {"message": "Hello, demo!"} else 1
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
