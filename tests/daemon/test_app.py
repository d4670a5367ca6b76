"""``python -m daemon run`` as a process: signals, readiness, settings errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.rpc_client import RpcClient
from tests.support.wait import wait_until

TIMEOUT = 30


@pytest.fixture
def daemon_env(iii_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("III_", "NOTIFY_", "LISTEN_"))}
    env.update(III_HOME=str(iii_home), III_URL="ws://127.0.0.1:9")
    return env


@pytest.fixture
def daemon(iii_home: Path, daemon_env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    log = open(iii_home / "daemon.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run"], env=daemon_env,
                            stdout=log, stderr=log, text=True)
    try:
        wait_until(lambda: (iii_home / "iii.sock").exists() or proc.poll() is not None,
                   TIMEOUT, "the daemon socket")
        assert proc.poll() is None, (iii_home / "daemon.log").read_text()
        # the socket exists from the bind on; one answered request means the server runs
        with RpcClient(iii_home / "iii.sock", autostart=False) as client:
            assert client.call("daemon.info")["pid"] == proc.pid
        yield proc
    finally:
        proc.kill()
        proc.wait()
        log.close()


def test_sigint_stops_gracefully_and_removes_the_socket(iii_home: Path,
                                                       daemon: subprocess.Popen[str]) -> None:
    daemon.send_signal(signal.SIGINT)
    assert daemon.wait(TIMEOUT) == 0
    assert not (iii_home / "iii.sock").exists()
    assert "daemon stopped" in (iii_home / "daemon.log").read_text()


def test_sigusr1_logs_every_task_stack(iii_home: Path, daemon: subprocess.Popen[str]) -> None:
    daemon.send_signal(signal.SIGUSR1)
    wait_until(lambda: "SIGUSR1:" in (iii_home / "daemon.log").read_text(), TIMEOUT,
               "the task dump")
    text = (iii_home / "daemon.log").read_text()
    assert "_accept_loop" in text  # the server's accept loop is among the dumped stacks
    assert daemon.poll() is None  # and the daemon keeps running


def test_ready_is_sent_to_notify_socket_once_accepting(iii_home: Path,
                                                       daemon_env: dict[str, str]) -> None:
    notify_path = iii_home / "notify"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify_path))
    receiver.settimeout(TIMEOUT)
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run"],
                            env={**daemon_env, "NOTIFY_SOCKET": str(notify_path)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        message = receiver.recv(4096).decode()
        assert "READY=1" in message
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(iii_home / "iii.sock"))  # accepting by the time READY=1 is sent
        probe.close()
        proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in receiver.recv(4096).decode()
        assert proc.wait(TIMEOUT) == 0
    finally:
        proc.kill()
        proc.wait()
        receiver.close()


def test_invalid_daemon_yaml_is_one_line_and_exit_1(iii_home: Path,
                                                    daemon_env: dict[str, str]) -> None:
    (iii_home / "daemon.yaml").write_text("stop_timeout_s: soon\n")
    out = subprocess.run([sys.executable, "-m", "daemon", "run"], env=daemon_env,
                         capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert out.returncode == 1
    expected = (f"error: {iii_home / 'daemon.yaml'}:1:17: stop_timeout_s: "
                "Expected `float | null`, got `str`")
    assert out.stderr.splitlines() == [expected]


STUCK_DAEMON = """
import asyncio, sys
from daemon.api.services import Services
from daemon.app import main
from tests.support.scripted_service import ScriptedService

class StuckOnClose(ScriptedService):
    async def aclose(self, *, stop_workers):
        print("closing", flush=True)
        await asyncio.Event().wait()  # a shutdown that never finishes

async def factory(settings, stack):
    return Services.of(StuckOnClose())

sys.exit(main(service_factory=factory))
"""


def test_a_second_sigint_forces_exit(iii_home: Path, daemon_env: dict[str, str]) -> None:
    proc = subprocess.Popen([sys.executable, "-c", STUCK_DAEMON], env=daemon_env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_until(lambda: (iii_home / "iii.sock").exists() or proc.poll() is not None,
                   TIMEOUT, "the daemon socket")
        with RpcClient(iii_home / "iii.sock", autostart=False) as client:
            client.call("daemon.info")
        proc.send_signal(signal.SIGINT)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "closing"  # stuck in the graceful shutdown
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 130
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
