"""The worker lifecycle against a model, end to end (issue 19): Hypothesis drives the real CLI
against a real daemon (real namespace sandboxes of busybox shell workers whose install takes a
moment, the stand-in engine) through add, add --force, start (returning once it is under way,
so the next command may land on its install), stop, restart, remove, engine up, engine down past
the grace, a worker crash and a daemon kill -9 + restart. After every step it checks, within a
bound, that each worker's status and launchers match the model's desired state (at most one
launcher), that removed workers leave no process and no ``managed/`` directory, that the
persisted desired state matches, and that config.yaml parses and lists exactly the model's
workers. The in-process model (tests/daemon/test_lifecycle_model.py) covers finer interleavings.

``III_E2E_MODEL_EXAMPLES=20`` runs it longer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from daemon.config.store import ConfigStore
from daemon.workers.supervision.desired import (
    IDLE,
    Desired,
    Want,
    Why,
    at_daemon_start,
    load_desired,
)
from tests.support.daemon import III_CLI, DaemonProcess, kill_sandboxes, launchers_of
from tests.support.engine import EngineProcess
from tests.support.projects import make_shell_project
from tests.support.registry import free_port
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow

# III_MODEL_VERBOSE=1 prints every step Hypothesis takes.
VERBOSITY = Verbosity.verbose if os.environ.get("III_MODEL_VERBOSE") else Verbosity.normal
NAMES = ("a", "b")
CONVERGE_S = 30.0
GRACE_S = 1
EXAMPLES = int(os.environ.get("III_E2E_MODEL_EXAMPLES", "4"))
RUNNING = Desired(want=Want.RUNNING, why=Why.USER)


class DaemonModel(RuleBasedStateMachine):
    image = ""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory(prefix="iii-m-", dir="/tmp")
        self.home = Path(self.tmp.name)
        (self.home / "daemon.yaml").write_text(f"engine_down_grace_s: {GRACE_S}\n")
        src = self.home / "src"
        src.mkdir()
        self.projects = {name: make_shell_project(src, self.image, name, start="exec sleep 1000",
                                                  install="sleep 0.3") for name in NAMES}
        self.engine = EngineProcess(free_port(), self.home / "engine.log")
        self.daemon = DaemonProcess(self.home, III_URL=self.engine.url).start()
        self.desired: dict[str, Desired] = {}
        self.engine_up = False
        self.pending: list[subprocess.Popen[str]] = []

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.daemon.iii(*args)
        assert result.returncode == 0, (args, result.stderr, self.daemon.log[-2000:])
        return result

    def status(self, name: str) -> str | None:
        listed = json.loads(self.cli("worker", "list", "--json").stdout)["workers"]
        return next((w["status"] for w in listed if w["name"] == name), None)

    # -- commands ------------------------------------------------------------------------------

    @initialize()
    def add_both(self) -> None:
        for name in NAMES:
            self.add(name, force=False)

    @rule(name=st.sampled_from(NAMES), force=st.booleans())
    def add(self, name: str, force: bool) -> None:
        if (name in self.desired) != force:
            return
        added = json.loads(self.cli("worker", "add", str(self.projects[name]), "--json",
                                    *(["--force"] if force else [])).stdout)
        if self.engine_up:
            self.desired[name] = Desired(want=Want.RUNNING, why=Why.ENGINE)
            assert added["started"] is True, added
        else:
            self.desired[name] = IDLE
            assert added["started"] is False, added

    @rule(name=st.sampled_from(NAMES))
    def start_under_way(self, name: str) -> None:
        """Start, and move on as soon as the daemon is at it (the install may still run)."""
        if name not in self.desired:
            return
        self.desired[name] = RUNNING
        proc = subprocess.Popen([str(Path(III_CLI).with_name("iii-worker")), "start", name],
                                env=self.daemon.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        self.pending.append(proc)
        wait_until(lambda: proc.poll() is not None or self.status(name) != "stopped", 30,
                   "the start to be under way")

    @rule(name=st.sampled_from(NAMES))
    def stop(self, name: str) -> None:
        if name in self.desired:
            self.desired[name] = Desired(want=Want.STOPPED, why=Why.USER)
            self.cli("worker", "stop", name)

    @rule(name=st.sampled_from(NAMES))
    def restart(self, name: str) -> None:
        if name in self.desired:
            old = self.desired[name]
            self.desired[name] = old if old.want is Want.RUNNING else RUNNING
            self.cli("worker", "restart", name)

    @rule(name=st.sampled_from(NAMES))
    def remove(self, name: str) -> None:
        if name in self.desired:
            del self.desired[name]
            self.cli("worker", "remove", name)

    @precondition(lambda self: not self.engine_up)
    @rule()
    def engine_comes_up(self) -> None:
        self.engine.start()
        self.engine_up = True
        for name, desired in self.desired.items():
            if desired.want is Want.STOPPED and not desired.manual_stop:
                self.desired[name] = Desired(want=Want.RUNNING, why=Why.ENGINE)
        wait_until(lambda: json.loads(self.cli("daemon", "status", "--json").stdout)
                   ["engine"]["reachable"], 10, "the engine session")

    @precondition(lambda self: self.engine_up)
    @rule()
    def engine_down_past_the_grace(self) -> None:
        self.engine.stop()
        self.engine_up = False
        for name, desired in self.desired.items():
            if desired.automatic:
                self.desired[name] = Desired(want=Want.STOPPED, why=Why.ENGINE)
        time.sleep(GRACE_S + 1.5)  # the grace is a duration: let it pass (checked each 1 s)

    @rule(name=st.sampled_from(NAMES))
    def crash(self, name: str) -> None:
        pid_file = self.home / "managed" / name / "launcher.pid"
        if name in self.desired and pid_file.exists():
            try:
                os.kill(json.loads(pid_file.read_text())["sandbox_pid"], signal.SIGKILL)
            except (OSError, ValueError, KeyError):
                pass

    @rule()
    def daemon_kill9_and_restart(self) -> None:
        self._reap()
        self.daemon.kill9()
        for name in self.desired:
            running = bool(launchers_of(self.home, name))
            persisted = load_desired(self.home / "managed" / name)
            desired = at_daemon_start(persisted, running)
            if self.engine_up and desired.want is Want.STOPPED and not desired.manual_stop:
                desired = Desired(want=Want.RUNNING, why=Why.ENGINE)
            self.desired[name] = desired
        self.daemon.start()

    # -- checks --------------------------------------------------------------------------------

    @invariant()
    def converges_to_the_model(self) -> None:
        wait_until(self._matches, CONVERGE_S, "the workers to match the model")
        self._reap()
        entries = ConfigStore(self.home / "config.yaml", self.home).load()
        assert sorted(e.name for e in entries) == sorted(self.desired)

    def _matches(self) -> bool:
        listed = {w["name"]: w for w in json.loads(
            self.cli("worker", "list", "--json").stdout)["workers"]}
        for name in NAMES:
            live = launchers_of(self.home, name)
            assert len(live) <= 1, (name, live)
            if name not in self.desired:
                if live or name in listed or (self.home / "managed" / name).exists():
                    return False
                continue
            running = self.desired[name].want is Want.RUNNING
            worker = listed.get(name)
            if worker is None or worker["status"] != ("running" if running else "stopped"):
                return False
            if live != ([worker["pid"]] if running else []):
                return False
            on_disk = load_desired(self.home / "managed" / name)
            if on_disk is not None and on_disk != self.desired[name]:
                return False
        return True

    def _reap(self) -> None:
        for proc in self.pending:
            proc.communicate(timeout=60)
            assert proc.returncode == 0, proc.stderr
        self.pending.clear()

    def teardown(self) -> None:
        try:
            for proc in self.pending:
                proc.kill()
                proc.communicate()
            self.daemon.stop()
            self.engine.stop()
        finally:
            kill_sandboxes(self.home)
            self.tmp.cleanup()


def test_the_daemon_follows_the_lifecycle_model(busybox_image: str) -> None:
    DaemonModel.image = busybox_image
    case: Any = DaemonModel.TestCase
    case.settings = settings(max_examples=EXAMPLES, stateful_step_count=15, deadline=None,
                             suppress_health_check=list(HealthCheck),
                             verbosity=VERBOSITY)
    case().runTest()
