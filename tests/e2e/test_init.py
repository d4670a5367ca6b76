"""``iii worker init`` makes workers that run unchanged: the Python, TypeScript, JavaScript and
Bun ones through the daemon (their real SDKs installed in the sandbox by their own install
steps), the Rust one built by the host's cargo."""

from __future__ import annotations

import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from client.scaffold import write_worker
from tests.support.engine import InvocationFailed, invoke_blocking
from tests.support.fixtures import push_built_image, push_python_image
from tests.support.images import BUN, NODE
from tests.support.registry import RegistryServer
from tests.support.wait import wait_until

NPM_TIMEOUT_S = 300
RELOAD_S = 60  # a reload restarts the runtime (tsx compiles on start) on a loaded machine
TEMPLATES = {"typescript": "src/index.ts", "javascript": "src/index.js", "bun": "src/index.ts",
             "python": "worker.py"}  # language -> its entry file


@pytest.mark.timeout(900)  # a fresh machine builds the node and bun images first
def test_templates_run_through_the_daemon_and_hot_reload(
        daemon_factory, engine_factory, registry: RegistryServer, tmp_path: Path) -> None:
    """``iii worker init -l typescript|javascript|bun|python`` + ``iii worker add``, all four in
    one daemon: each installs its real SDK in its sandbox (npm's ``iii-sdk`` with npm or bun's
    own installer, PyPI's ``iii-sdk`` with pip), registers and answers; then a saved edit of
    each entry file is the new version answering (hot reload, for each of these kinds)."""
    push_python_image(registry, "iiidev/python", "latest")
    push_built_image(registry, NODE, "iiidev/node", "latest")
    push_built_image(registry, BUN, "oven/bun", "latest")
    engine = engine_factory()
    daemon = daemon_factory(III_URL=engine.url, III_REGISTRY_MIRROR=registry.host)
    wait_until(lambda: daemon.json("daemon", "status")["engine"]["reachable"], 10, "engine up")
    entries = {}
    for language, entry in TEMPLATES.items():
        name = f"hello-{language}"
        made = daemon.iii("worker", "init", name, "-l", language, "-d", str(tmp_path / name))
        assert made.returncode == 0, made.stderr
        entries[name] = tmp_path / name / entry

    def add(name: str) -> subprocess.CompletedProcess[str]:
        return daemon.iii("worker", "add", str(tmp_path / name), timeout=NPM_TIMEOUT_S)
    with ThreadPoolExecutor(len(entries)) as pool:  # the installs overlap: most is waiting
        for name, added in zip(entries, pool.map(add, entries), strict=True):
            assert added.returncode == 0, f"{name}: {added.stderr}"
    for name in entries:
        wait_until(lambda n=name: daemon.worker(n)["engine_registered"] is True,  # type: ignore[misc]
                   NPM_TIMEOUT_S, f"the engine to list {name}")
        assert answer(engine.url, name) == {"message": "Hello, init!"}

    for entry in entries.values():
        edited = entry.read_text().replace("Hello, ", "Howdy, ")
        assert edited != entry.read_text()
        entry.write_text(edited)
    for name, entry in entries.items():
        wait_until(lambda n=name: answer(engine.url, n) == {"message": "Howdy, init!"},
                   RELOAD_S, f"{name}'s edited version to answer")
        logs = daemon.iii("worker", "logs", name, "--tail", "500").stdout
        assert f"[iii] reloading ({entry.relative_to(tmp_path / name)} changed)" in logs
        assert logs.count("[iii] running install") == 1  # a source edit does not re-install


def answer(url: str, name: str) -> object:
    try:
        return invoke_blocking(url, f"{name}::hello", {"name": "init"}, timeout=5)
    except (InvocationFailed, OSError, TimeoutError):
        return None


def test_rust_template_builds_and_runs(tmp_path: Path) -> None:
    if shutil.which("cargo") is None:
        pytest.skip("cargo is needed to build the template outside a sandbox")
    project = tmp_path / "hello-rs"
    write_worker(project, "hello-rs", "rust")
    built = subprocess.run(["cargo", "build", "--release", "--offline"], cwd=project,
                           capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr[-2000:]
    run = subprocess.Popen([str(project / "target/release/hello-rs")],
                           env={"III_URL": "ws://127.0.0.1:1"}, stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    assert run.stdout.readline().strip() == "hello-rs: running; engine at ws://127.0.0.1:1"
    run.send_signal(signal.SIGTERM)  # the default action ends it
    assert run.wait(10) == -signal.SIGTERM
    run.stdout.close()
