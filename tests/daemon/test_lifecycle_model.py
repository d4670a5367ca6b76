"""A model-based test of the worker lifecycle (issue 19, STYLE §5): Hypothesis drives random
interleavings of add, start, stop, restart, remove, engine up, engine down past the grace, a
worker crash and a daemon kill -9 + restart against a small model of desired state, and checks
after every step that no worker has two launchers, and at the end of each step that the
workers converge to the model within a bound, that removed workers leave no process, and that
the persisted desired state matches the model.

Real parts: every worker is a real host launcher running a shell loop (``start_binary``), each
launch first "installs" for a random short while (so stops and removals hit launches in flight);
the daemon restart detaches the supervisor (processes keep running, as after kill -9) and a new
one reattaches them from their pid files and persisted desired state. Not covered here:
config.yaml and the socket (the e2e tests do those).

``III_MODEL_EXAMPLES=200 pytest tests/daemon/test_lifecycle_model.py`` runs it longer.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from daemon.background import BackgroundTasks
from daemon.errors import DaemonError
from daemon.events import EventBus
from daemon.sandboxes import SandboxLayout, SandboxTask
from daemon.workers.supervision.desired import (
    IDLE,
    Desired,
    Want,
    Why,
    at_daemon_start,
    load_desired,
)
from daemon.workers.supervision.runtime import BootSink, Launched
from daemon.workers.supervision.state import Backoff, WorkerState
from daemon.workers.supervision.supervisor import Supervisor
from tests.support.daemon import launchers_of, start_sleeping_shell

# III_MODEL_VERBOSE=1 prints every step Hypothesis takes.
VERBOSITY = Verbosity.verbose if os.environ.get("III_MODEL_VERBOSE") else Verbosity.normal
NAMES = ("a", "b")
CONVERGE_S = 15.0
EXAMPLES = int(os.environ.get("III_MODEL_EXAMPLES", "10"))


class ShellWorkers:
    """The launch function: a short random "install", then a shell loop under a host launcher."""

    def __init__(self, home: Path, seed: int) -> None:
        self.home, self.random = home, random.Random(seed)
        self.launches = 0

    async def launch(self, name: str, progress: BootSink) -> Launched:
        await asyncio.sleep(self.random.choice((0.0, 0.05, 0.3)))  # cancellable, as install is
        self.launches += 1
        return await start_sleeping_shell(self.home, name)


class LifecycleModel(RuleBasedStateMachine):
    home: Path

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.home = Path(tempfile.mkdtemp(prefix="run-", dir=self.home_root))
        self.workers = ShellWorkers(self.home, id(self))
        self.desired: dict[str, Desired] = {}  # the model: present workers and their intent
        self.engine_up = False
        self.pending: list[asyncio.Task[Any]] = []
        self.tasks = BackgroundTasks()
        self.run(self.tasks.__aenter__())
        self.sup = self._supervisor()

    home_root: str = ""

    def _supervisor(self) -> Supervisor:
        # Crash backoff starts at 50 ms here (1 s in the daemon), so a run converges in seconds.
        return Supervisor(self.workers.launch, EventBus(), self.tasks, home=self.home,
                          stop_timeout_s=2.0, backoff=Backoff(initial_s=0.05))

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn`` inside the loop (reconcilers are made there)."""
        async def inside() -> Any:
            return fn(*args)
        return self.run(inside())

    def spawn(self, coro: Any) -> None:
        self.pending.append(self.loop.create_task(coro))
        self.run(asyncio.sleep(0.02))  # let it begin: the next rule may land mid-launch

    # -- commands (each only states intent; the model says what must follow) ------------------

    @initialize()
    def add_both(self) -> None:
        for name in NAMES:
            self.add(name)

    @rule(name=st.sampled_from(NAMES))
    def add(self, name: str) -> None:
        if name in self.desired:
            return
        self.desired[name] = IDLE
        self.call(self.sup.reconciler, name, IDLE)
        if self.engine_up:
            self._auto_start(name)

    def _auto_start(self, name: str) -> None:
        desired = self.desired[name]
        if not desired.manual_stop and desired.want is Want.STOPPED:
            self.desired[name] = Desired(want=Want.RUNNING, why=Why.ENGINE)
        self.call(self.sup.auto_start, name)

    @rule(name=st.sampled_from(NAMES))
    def start(self, name: str) -> None:
        if name in self.desired:
            self.desired[name] = Desired(want=Want.RUNNING, why=Why.USER)
            self.spawn(self.sup.find(name).start(Why.USER))  # type: ignore[union-attr]

    @rule(name=st.sampled_from(NAMES))
    def stop(self, name: str) -> None:
        if name in self.desired:
            self.desired[name] = Desired(want=Want.STOPPED, why=Why.USER)
            self.spawn(self.sup.find(name).stop(Why.USER))  # type: ignore[union-attr]

    @rule(name=st.sampled_from(NAMES))
    def restart(self, name: str) -> None:
        if name in self.desired:
            old = self.desired[name]
            self.desired[name] = Desired(
                want=Want.RUNNING, why=old.why if old.want is Want.RUNNING else Why.USER)
            self.spawn(self.sup.find(name).restart())  # type: ignore[union-attr]

    @rule(name=st.sampled_from(NAMES))
    def remove(self, name: str) -> None:
        if name in self.desired:
            del self.desired[name]
            self.run(self.sup.remove(name))
            self.run(asyncio.to_thread(SandboxLayout(self.home, name).remove))

    @rule()
    def engine_comes_up(self) -> None:
        self.engine_up = True
        for name in self.desired:
            self._auto_start(name)

    @rule()
    def engine_down_past_grace(self) -> None:
        self.engine_up = False
        for name, desired in self.desired.items():
            if desired.automatic:
                self.desired[name] = Desired(want=Want.STOPPED, why=Why.ENGINE)
        self.call(self.sup.grace_stop)

    @rule(name=st.sampled_from(NAMES))
    def crash(self, name: str) -> None:
        rec = self.sup.find(name)
        task = rec.rt.task if rec is not None else None
        if task is not None and task.sandbox_pid is not None:
            os.kill(task.sandbox_pid, signal.SIGKILL)  # the desired state does not change
            self.run(asyncio.sleep(0.05))

    @rule()
    def daemon_kill9_and_restart(self) -> None:
        self.run(self.sup.close_all(stop_workers=False))  # as after kill -9: processes stay
        self._drain()
        self.sup = self._supervisor()
        for name in list(self.desired):
            layout = SandboxLayout(self.home, name)
            task = SandboxTask.reattach(layout)
            persisted = load_desired(layout.dir)
            assert persisted in (None, self.desired[name]) or self.desired[name] == IDLE
            desired = self.desired[name] = at_daemon_start(persisted, task is not None)
            if task is not None:
                self.call(self.sup.adopt, name, task, None, desired)
            else:
                self.call(self.sup.reconciler, name, desired)

    # -- checks ----------------------------------------------------------------------------------

    @invariant()
    def at_most_one_launcher_per_worker(self) -> None:
        for name in NAMES:
            assert len(launchers_of(self.home, name)) <= 1, name

    @invariant()
    def converges_to_the_model(self) -> None:
        self.run(self._converged())

    async def _converged(self) -> None:
        deadline = asyncio.get_running_loop().time() + CONVERGE_S
        while not self._matches():
            assert asyncio.get_running_loop().time() < deadline, self._describe()
            await asyncio.sleep(0.05)

    def _matches(self) -> bool:
        for name in NAMES:
            rec = self.sup.find(name)
            live = launchers_of(self.home, name)
            if name not in self.desired:
                if rec is not None or live:
                    return False
                continue
            if rec is None or rec.rt.desired != self.desired[name]:
                return False
            running = self.desired[name].want is Want.RUNNING
            expected = WorkerState.RUNNING if running else WorkerState.STOPPED
            if rec.rt.state is not expected or len(live) != int(running):
                return False
            if running and live != [rec.rt.task.pid if rec.rt.task else None]:
                return False
            on_disk = load_desired(SandboxLayout(self.home, name).dir)
            if on_disk is not None and on_disk != self.desired[name] \
                    and self.desired[name] != IDLE:
                return False
        return True

    def _describe(self) -> str:
        return str({name: (self.desired.get(name),
                           (rec.rt.desired, rec.rt.state) if (rec := self.sup.find(name)) else None,
                           launchers_of(self.home, name)) for name in NAMES})

    def _drain(self) -> None:
        for task in self.pending:
            if not task.done():
                task.cancel()
        if self.pending:
            self.run(asyncio.wait(self.pending))
        for task in self.pending:
            if not task.cancelled() and task.exception() is not None:
                assert isinstance(task.exception(), DaemonError), task.exception()
        self.pending.clear()

    def teardown(self) -> None:
        try:
            self.run(self.sup.close_all(stop_workers=True))
            self._drain()
            self.tasks.cancel_all()
            self.run(self.tasks.__aexit__(None, None, None))
        finally:
            for name in NAMES:
                for pid in launchers_of(self.home, name):
                    os.kill(pid, signal.SIGKILL)
            self.loop.close()


def test_the_lifecycle_follows_its_model(tmp_path: Path) -> None:
    LifecycleModel.home_root = str(tmp_path)
    machine = LifecycleModel.TestCase
    machine.settings = settings(max_examples=EXAMPLES, stateful_step_count=20, deadline=None,
                                suppress_health_check=list(HealthCheck),
                                verbosity=VERBOSITY)
    machine().runTest()
