"""The supervisor and its per-worker reconcilers with real processes (host launchers running
small shell scripts): a crash goes to backoff and restarts; a failed restart backs off again,
longer; a manual stop wins over a pending restart, over automatic starts and over a launch in
flight; racing starts and stops are idempotent; a restart keeps why the worker runs; a launch
that raises leaves the worker stopped. The events are what clients see, so tests check their
order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from client.protocol.messages import EventNotification
from daemon.background import BackgroundTasks
from daemon.config.entries import WorkerEntry
from daemon.errors import DaemonError
from daemon.events import EventBus
from daemon.sandboxes import SandboxLayout
from daemon.workers.launching.binary import start_binary
from daemon.workers.supervision.desired import Want, Why, load_desired
from daemon.workers.supervision.runtime import BootSink, Launched
from daemon.workers.supervision.state import DEFAULT_BACKOFF, Backoff, WorkerState
from daemon.workers.supervision.supervisor import Supervisor
from tests.support.wait import async_wait_until

TIMEOUT = 20.0
S = WorkerState


class Scripts:
    """A launch function: the n-th start runs ``scripts[n]`` (an exception instance raises)."""

    def __init__(self, home: Path, scripts: list[str | Exception]) -> None:
        self.home, self.scripts, self.starts = home, scripts, 0

    async def launch(self, name: str, progress: BootSink) -> Launched:
        script = self.scripts[min(self.starts, len(self.scripts) - 1)]
        self.starts += 1
        if isinstance(script, Exception):
            raise script
        binary = self.home / f"{name}-{self.starts}.sh"
        binary.write_text(f"#!/bin/sh\n{script}\n")
        binary.chmod(0o755)
        task = await start_binary(SandboxLayout(self.home, name), WorkerEntry(name=name),
                                  str(binary), "ws://127.0.0.1:9")
        return Launched(task=task, isolation=None)


@pytest.fixture
async def tasks() -> AsyncIterator[BackgroundTasks]:
    async with BackgroundTasks() as tasks:
        yield tasks
        tasks.cancel_all()


def recorder(events: EventBus, tasks: BackgroundTasks) -> list[EventNotification]:
    seen: list[EventNotification] = []
    stream = events.stream()

    async def record() -> None:
        async for event in stream:
            seen.append(event)

    tasks.create_task(record(), name="record")
    return seen


async def supervised(home: Path, tasks: BackgroundTasks, scripts: list[str | Exception],
                     backoff: Backoff = DEFAULT_BACKOFF,
                     ) -> tuple[Supervisor, Scripts, list[EventNotification]]:
    """A supervisor over ``scripts``, and the events it publishes as they arrive."""
    events = EventBus()
    seen = recorder(events, tasks)
    await asyncio.sleep(0)  # the recorder subscribes before anything is published
    launch = Scripts(home, scripts)
    return Supervisor(launch.launch, events, tasks, home=home, backoff=backoff), launch, seen


def statuses(seen: list[EventNotification]) -> list[str]:
    return [e.status for e in seen]


async def until(check: Callable[[], bool], what: str) -> None:
    async def ready() -> bool:
        return check()

    await async_wait_until(ready, TIMEOUT, what)


async def test_a_crash_backs_off_then_restarts(tmp_path: Path, tasks: BackgroundTasks) -> None:
    sup, launch, seen = await supervised(tmp_path, tasks, ["exit 3", "exec sleep 30"])
    rt, _ = await sup.start("w")
    await until(lambda: statuses(seen).count("running") == 2, "the restart")
    assert rt.restarts == 1 and rt.last_exit_code == 3 and rt.failures == 1
    assert launch.starts == 2
    assert statuses(seen) == ["preparing", "starting", "running", "crashed", "backoff",
                              "preparing", "starting", "running"]
    assert seen[3].detail == "exit code 3"
    assert seen[4].detail == f"restarting in {DEFAULT_BACKOFF.delay(1):g}s"
    await sup.stop("w", 5)
    assert rt.state is S.STOPPED and rt.desired.manual_stop


async def test_the_backoff_is_the_configured_one(tmp_path: Path, tasks: BackgroundTasks) -> None:
    short = Backoff(initial_s=0.05, max_s=0.1)  # daemon.yaml's restart_backoff_s / _max_s
    sup, _, seen = await supervised(tmp_path, tasks, ["exit 3", "exit 4", "exit 5",
                                                      "exec sleep 30"], backoff=short)
    await sup.start("w")
    await until(lambda: statuses(seen).count("running") == 4, "three restarts")
    assert [e.detail for e in seen if e.status == "backoff"] == [
        "restarting in 0.05s", "restarting in 0.1s", "restarting in 0.1s"]
    await sup.stop("w", 5)


async def test_a_failed_restart_backs_off_again_for_longer(tmp_path: Path,
                                                           tasks: BackgroundTasks) -> None:
    sup, launch, seen = await supervised(tmp_path, tasks, ["exit 1", DaemonError("image gone")])
    rt, _ = await sup.start("w")
    await until(lambda: statuses(seen).count("backoff") == 2, "the second backoff")
    assert statuses(seen)[-4:] == ["backoff", "preparing", "crashed", "backoff"]
    assert seen[-2].detail == "start failed: image gone"
    assert rt.state is S.BACKOFF and rt.failures == 2 and DEFAULT_BACKOFF.delay(2) > DEFAULT_BACKOFF.delay(1)
    assert launch.starts == 2
    await sup.stop("w", 5)
    assert rt.state is S.STOPPED
    await until(lambda: statuses(seen)[-1] == "stopped", "the stopped event")


async def test_a_manual_stop_wins_over_a_pending_restart(tmp_path: Path,
                                                         tasks: BackgroundTasks) -> None:
    sup, launch, seen = await supervised(tmp_path, tasks, ["exit 7", "exec sleep 30"])
    rt, _ = await sup.start("w")
    await until(lambda: rt.state is S.BACKOFF, "the backoff")
    await sup.stop("w", 5)
    assert rt.state is S.STOPPED
    await until(lambda: seen[-1].detail == "stopped while waiting to restart", "the event")
    await asyncio.sleep(DEFAULT_BACKOFF.delay(1) + 0.5)  # past the restart that was pending
    assert launch.starts == 1 and rt.state is S.STOPPED


async def test_a_manual_stop_holds_against_automatic_starts(tmp_path: Path,
                                                            tasks: BackgroundTasks) -> None:
    sup, launch, seen = await supervised(tmp_path, tasks, ["exec sleep 30"])
    rt, _ = await sup.start("w", Why.ENGINE)
    assert rt.state is S.RUNNING and rt.desired.automatic
    await sup.stop("w", 5)
    assert rt.desired.manual_stop
    await until(lambda: statuses(seen)[-2:] == ["stopping", "stopped"], "the stop events")
    sup.auto_start("w")  # the engine came back: not for this one
    await asyncio.sleep(0.2)
    assert rt.state is S.STOPPED and launch.starts == 1
    rt, _ = await sup.start("w")  # the user starts it: that clears the manual stop
    assert rt.state is S.RUNNING and rt.desired == rt.desired.__class__(want=Want.RUNNING,
                                                                         why=Why.USER)
    await sup.stop("w", 5)


async def test_a_launch_that_raises_leaves_the_worker_stopped(tmp_path: Path,
                                                              tasks: BackgroundTasks) -> None:
    sup, launch, seen = await supervised(tmp_path, tasks, [DaemonError("no such image")])
    with pytest.raises(DaemonError, match="no such image"):
        await sup.start("w")
    rt = sup.runtime("w")
    assert rt.state is S.STOPPED and launch.starts == 1
    await until(lambda: len(seen) == 2, "the events")
    assert statuses(seen) == ["preparing", "stopped"]
    assert seen[-1].detail == "start failed: no such image"
    await asyncio.sleep(0.2)
    assert launch.starts == 1  # a failed start waits for a newer request: no retry loop


async def test_a_worker_exiting_as_it_is_stopped_is_stopped_not_crashed(
        tmp_path: Path, tasks: BackgroundTasks) -> None:
    sup, launch, seen = await supervised(tmp_path, tasks, ["trap 'exit 0' TERM; sleep 30 & wait"])
    await sup.start("w")
    await sup.stop("w", 5)
    assert "crashed" not in statuses(seen) and statuses(seen)[-1] == "stopped"
    assert launch.starts == 1


class SlowLaunch(Scripts):
    """A launch whose "install" is a real process that runs until it is killed."""

    def __init__(self, home: Path) -> None:
        super().__init__(home, ["exec sleep 30"])
        self.install_pids: list[int] = []
        self.release = asyncio.Event()

    async def launch(self, name: str, progress: BootSink) -> Launched:
        binary = self.home / f"{name}-install.sh"
        binary.write_text("#!/bin/sh\nexec sleep 1000\n")
        binary.chmod(0o755)
        install = await start_binary(SandboxLayout(self.home, name), WorkerEntry(name=name),
                                     str(binary), "ws://127.0.0.1:9")
        assert install.pid is not None
        self.install_pids.append(install.pid)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            await install.kill_now()  # what boot.run_script does when a stop wins
            raise
        await install.kill_now()
        return await super().launch(name, progress)


async def test_a_stop_wins_over_a_launch_in_flight(tmp_path: Path,
                                                   tasks: BackgroundTasks) -> None:
    from daemon.sandboxes.procinfo import is_alive

    events = EventBus()
    launch = SlowLaunch(tmp_path)
    sup = Supervisor(launch.launch, events, tasks, home=tmp_path)
    starting = asyncio.create_task(sup.start("w"))
    await until(lambda: bool(launch.install_pids), "the install to run")
    await asyncio.wait_for(sup.stop("w", 5), 5)  # returns: it does not wait for the install
    rt, _ = await asyncio.wait_for(starting, 5)  # the start returns too, superseded
    assert rt.state is S.STOPPED and rt.task is None
    assert not is_alive(launch.install_pids[0])
    assert load_desired(SandboxLayout(tmp_path, "w").dir) == rt.desired  # persisted
    assert rt.desired.manual_stop


async def test_racing_starts_and_stops_are_idempotent(tmp_path: Path,
                                                      tasks: BackgroundTasks) -> None:
    sup, launch, _seen = await supervised(tmp_path, tasks, ["exec sleep 30"])
    results = await asyncio.gather(*(sup.start("w") for _ in range(3)))
    assert all(rt.state is S.RUNNING for rt, _ in results) and launch.starts == 1
    await asyncio.gather(*(sup.stop("w", 5) for _ in range(3)))
    assert sup.runtime("w").state is S.STOPPED and sup.runtime("w").task is None
    both = await asyncio.gather(sup.start("w"), sup.stop("w", 5), sup.start("w"))
    assert both[-1][0].state is S.RUNNING and launch.starts in (2, 3)
    await sup.stop("w", 5)


async def test_a_restart_keeps_why_the_worker_runs(tmp_path: Path,
                                                   tasks: BackgroundTasks) -> None:
    """A hot reload of an auto-started worker: the engine-down grace still stops it."""
    sup, launch, _seen = await supervised(tmp_path, tasks, ["exec sleep 30"])
    await sup.start("w", Why.ENGINE)
    first = sup.runtime("w").pid
    rt, _ = await sup.restart("w")
    assert rt.state is S.RUNNING and rt.pid != first and launch.starts == 2
    assert rt.desired.automatic
    assert sup.grace_stop() == ["w"]
    await until(lambda: rt.state is S.STOPPED, "the grace stop")
    assert not rt.desired.manual_stop  # the next engine-up starts it again


async def test_a_removal_cancels_a_job_in_flight_with_the_one_busy_code(
        tmp_path: Path, tasks: BackgroundTasks) -> None:
    """An export (a job) of a worker being removed truly conflicts: -32007, nothing else."""
    from client.protocol.constants import ErrorCode
    from daemon.api.rpc import error_code_for
    from daemon.errors import Conflict

    sup, _launch, _seen = await supervised(tmp_path, tasks, ["exec sleep 30"])
    rec = sup.reconciler("w")
    started = asyncio.Event()

    async def long_export(control: object) -> str:
        started.set()
        await asyncio.sleep(30)
        return "exported"

    job = asyncio.create_task(rec.job(long_export, cancel_on_stop=False))
    await started.wait()
    await sup.stop("w", 5)  # a stop does not cancel it (cancel_on_stop=False)...
    assert not job.done()
    await asyncio.wait_for(sup.remove("w"), 5)  # ...a removal does, at once
    with pytest.raises(Conflict, match="removed") as info:
        await job
    assert error_code_for(info.value) == ErrorCode.CONFLICT
    with pytest.raises(Conflict):
        await rec.job(long_export, cancel_on_stop=False)
