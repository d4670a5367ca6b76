"""``iii worker init`` makes workers that run unchanged: the Python one through the daemon (its
real SDK installed in the sandbox by its own install script), the Node one on the host's Node
with the real npm ``iii-sdk``, the Rust one built by the host's cargo."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from client.scaffold import write_worker
from tests.support.engine import InvocationFailed, invoke_blocking
from tests.support.fixtures import push_python_image
from tests.support.registry import RegistryServer
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow
NPM_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def mirror(registry: RegistryServer) -> str:
    push_python_image(registry, "iiidev/python", "latest")
    return registry.host


def test_python_template_registers_and_answers(daemon_factory, engine_factory, mirror: str,
                                               tmp_path: Path) -> None:
    write_worker(tmp_path / "hello", "hello", "python")
    engine = engine_factory()
    daemon = daemon_factory(III_URL=engine.url, III_REGISTRY_MIRROR=mirror)
    wait_until(lambda: daemon.json("daemon", "status")["engine"]["reachable"], 10, "engine up")
    added = daemon.json("worker", "add", str(tmp_path / "hello"))
    assert added["started"] is True
    wait_until(lambda: daemon.worker("hello")["engine_registered"] is True, 90,
               "the engine to list the worker")
    assert invoke_blocking(engine.url, "hello::hello", {"name": "init"}) == \
        {"message": "Hello, init!"}


def test_typescript_template_runs_on_node_with_the_real_sdk(engine_factory,
                                                            tmp_path: Path) -> None:
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("node and npm are needed to run the template outside a sandbox")
    project = tmp_path / "hello-ts"
    write_worker(project, "hello-ts", "typescript")
    installed = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=project,
                               capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False)
    assert installed.returncode == 0, installed.stderr[-2000:]
    engine = engine_factory()
    env = {**os.environ, "III_URL": engine.url, "III_WORKER_NAME": "hello-ts"}
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(["npx", "tsx", "src/index.ts"], cwd=project, env=env,
                                  stdout=log, stderr=log, start_new_session=True)
    try:
        wait_until(lambda: "registered hello-ts::hello" in (tmp_path / "worker.log").read_text()
                   or worker.poll() is not None, 60, "the worker to register")
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        answers: list[object] = []

        def answered() -> bool:  # the SDK connects and registers after the log line
            try:
                answers.append(invoke_blocking(engine.url, "hello-ts::hello", {"name": "node"}))
            except InvocationFailed:
                return False
            return True
        wait_until(answered, 30, "hello-ts::hello to answer")
        assert answers == [{"message": "Hello, node!"}]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(20)


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
