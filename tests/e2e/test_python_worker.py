"""The product end to end: the Python example worker, the real iii SDK installed by its own
install script inside a namespace sandbox, a real registry serving the image as a Docker Hub
mirror, and the stand-in engine (TESTING.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.engine import invoke_blocking
from tests.support.fixtures import push_python_image
from tests.support.registry import RegistryServer
from tests.support.wait import wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python-worker"


@pytest.fixture(scope="module")
def mirror(registry: RegistryServer) -> str:
    """The registry, holding the example's default base image as Docker Hub would."""
    push_python_image(registry, "iiidev/python", "latest")
    return registry.host


def test_python_worker_lifecycle(daemon_factory, engine_factory, mirror: str, iii_home: Path,
                                 tmp_path: Path) -> None:
    project = tmp_path / "python-worker"
    shutil.copytree(EXAMPLE, project)
    engine = engine_factory()
    daemon = daemon_factory(III_URL=engine.url, III_REGISTRY_MIRROR=mirror)
    wait_until(lambda: daemon.json("daemon", "status")["engine"]["reachable"], 5, "engine up")

    added = daemon.json("worker", "add", str(project))
    assert added["started"] is True
    config = (iii_home / "config.yaml").read_text()
    assert "name: python-worker" in config and f"worker_path: {project}" in config
    wait_until(lambda: daemon.worker("python-worker")["engine_registered"] is True, 60,
               "the engine to list the worker")
    worker = daemon.worker("python-worker")
    assert worker["status"] == "running" and worker["isolation"] == "namespace"
    assert worker["deps_installed"] is True
    answer = invoke_blocking(engine.url, "examples::greet", {"name": "iii"})
    assert answer == {"message": "Hello, iii!"}

    stopped = daemon.json("worker", "stop", "python-worker")
    assert stopped["status"] == "stopped" and stopped["pid"] is None
    wait_until(lambda: daemon.worker("python-worker")["engine_registered"] is False, 10,
               "the engine to drop the worker")

    # Later start: the marker skips setup/install, the edited project file is re-synced.
    source = project / "worker.py"
    edited = source.read_text().replace('os.environ.get("GREETING", "Hello")', '"Hi"')
    assert edited != source.read_text()
    source.write_text(edited)
    started = daemon.iii("worker", "start", "python-worker")
    assert started.returncode == 0, started.stderr
    assert "skipping setup and install" in started.stdout + started.stderr
    wait_until(lambda: daemon.worker("python-worker")["engine_registered"] is True, 60,
               "re-registration")
    assert invoke_blocking(engine.url, "examples::greet", {"name": "iii"}) == \
        {"message": "Hi, iii!"}

    removed = daemon.json("worker", "remove", "python-worker")
    assert removed["removed"] is True and removed["freed_bytes"] > 0
    assert "python-worker" not in (iii_home / "config.yaml").read_text()
    assert not (iii_home / "managed" / "python-worker").exists()
