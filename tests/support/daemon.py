"""A real daemon process (``python -m daemon run``) on a private III_HOME, and the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.wait import wait_until
from vmm_ffi.network.helper import tun_problem

if TYPE_CHECKING:
    from daemon.workers.supervision.runtime import Launched

III_CLI = str(Path(sys.executable).with_name("iii"))
DAEMON_START_TIMEOUT_S = 20.0
CLI_TIMEOUT_S = 300.0


class DaemonProcess:
    """Start, kill and restart a daemon; run ``iii`` against it. Logs in ``home/daemon-N.log``."""

    def __init__(self, home: Path, args: tuple[str, ...] = (), **env: str) -> None:
        self.home = home
        self.args = args
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
        self.env.update(III_HOME=str(home), III_NO_AUTOSTART="1")
        if tun_problem() is not None:  # a non-root run where /dev/net/tun is root-only:
            self.env["III_NETWORK"] = "host"  # pasta cannot run, so the daemon would refuse
        self.env.update(**env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def socket(self) -> Path:
        return self.home / "iii.sock"

    @property
    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.home.glob("daemon-*.log")))

    def start(self) -> DaemonProcess:
        self.starts += 1
        with open(self.home / f"daemon-{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", *self.args],
                                         env=self.env, stdout=log, stderr=log,
                                         start_new_session=True)
        wait_until(lambda: self.iii("daemon", "status").returncode == 0 or self._died(),
                   DAEMON_START_TIMEOUT_S, "the daemon to answer")
        assert self.proc.poll() is None, f"daemon exited:\n{self.log}"
        return self

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def iii(self, *args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run([III_CLI, *args], check=False, env=self.env, capture_output=True,
                              text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def json(self, *args: str) -> Any:
        result = self.iii(*args, "--json")
        assert result.returncode == 0, f"iii {' '.join(args)}: {result.stderr}\n{self.log[-3000:]}"
        return json.loads(result.stdout)

    def worker(self, name: str) -> dict[str, Any]:
        return next(w for w in self.json("worker", "list")["workers"] if w["name"] == name)


async def start_sleeping_shell(home: Path, name: str) -> Launched:
    """A worker ``name`` that only sleeps, under a real host launcher: the launch function of
    in-process supervisor tests and benches."""
    from daemon.config.entries import WorkerEntry
    from daemon.sandboxes import SandboxLayout
    from daemon.workers.launching.binary import start_binary
    from daemon.workers.supervision.runtime import Launched

    binary = home / f"{name}.sh"
    binary.write_text("#!/bin/sh\nexec sleep 1000\n")
    binary.chmod(0o755)
    task = await start_binary(SandboxLayout(home, name), WorkerEntry(name=name), str(binary),
                              "ws://127.0.0.1:9")
    return Launched(task=task, isolation=None)


def launchers_of(home: Path, name: str) -> list[int]:
    """Live launcher processes of one sandbox, found by their bootstrap path (the sandbox init,
    forked from the launcher with the same command line, is not counted)."""
    needle = str(home / "managed" / name / "bootstrap.json").encode()
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        if b"vmm_ffi.launcher" in cmd and needle in cmd:
            ppid = next(ln.split()[1] for ln in status.splitlines() if ln.startswith("PPid:"))
            found[int(entry)] = int(ppid)
    return sorted(pid for pid, ppid in found.items() if ppid not in found)


def kill_sandboxes(home: Path) -> None:
    """Teardown: SIGKILL every launcher still recorded under ``home`` (never leave strays)."""
    for pid_file in [*home.glob("managed/*/launcher.pid"),
                     *home.glob("sandboxes/managed/*/launcher.pid")]:  # + ephemeral sandboxes
        try:
            pid = int(json.loads(pid_file.read_text())["pid"])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, KeyError, TypeError):
            pass


@pytest.fixture
def daemon_factory(iii_home: Path) -> Iterator[Any]:
    """``daemon_factory(**env) -> DaemonProcess`` (started); everything is stopped at teardown."""
    made: list[DaemonProcess] = []

    def make(args: tuple[str, ...] = (), **env: str) -> DaemonProcess:
        d = DaemonProcess(iii_home, args, **env)
        made.append(d)
        return d.start()

    yield make
    for d in made:
        d.stop()
    kill_sandboxes(iii_home)
    # Shown by pytest only when the test failed.
    for d in made[:1]:
        print("---- daemon log ----\n" + d.log[-4000:])
    for log in iii_home.glob("managed/*/logs/worker.log"):
        print(f"---- {log} ----\n" + log.read_text(errors="replace")[-4000:])
