"""The supervisor's paths with real processes (host launchers running small shell scripts):
a crash goes to backoff and restarts; a failed restart backs off again, longer; a manual stop
wins over a pending restart and over automatic starts; a launch that raises leaves the worker
stopped. The events are what clients see, so each test checks their order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from client.protocol import EventNotification
from daemon.background import BackgroundTasks
from daemon.config.entries import WorkerEntry
from daemon.errors import DaemonError
from daemon.events import EventBus
from daemon.sandboxes import SandboxLayout
from daemon.workers.binary import start_binary
from daemon.workers.state import WorkerState, backoff_delay
from daemon.workers.supervisor import Launched, Progress, Supervisor
from tests.support.wait import async_wait_until

TIMEOUT = 20.0
S = WorkerState


class Scripts:
    """A launch function: the n-th start runs ``scripts[n]`` (an exception instance raises)."""

    def __init__(self, home: Path, scripts: list[str | Exception]) -> None:
        self.home, self.scripts, self.starts = home, scripts, 0

    async def launch(self, name: str, progress: Progress | None) -> Launched:
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


async def supervised(home: Path, tasks: BackgroundTasks, scripts: list[str | Exception]
                     ) -> tuple[Supervisor, Scripts, list[EventNotification]]:
    """A supervisor over ``scripts``, and the events it publishes as they arrive."""
    events = EventBus()
    seen = recorder(events, tasks)
    await asyncio.sleep(0)  # the recorder subscribes before anything is published
    launch = Scripts(home, scripts)
    return Supervisor(launch.launch, events, tasks), launch, seen


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
    assert seen[4].detail == f"restarting in {backoff_delay(1):g}s"
    await sup.stop("w", 5)
    assert rt.state is S.STOPPED and rt.manual_stop


async def test_a_failed_restart_backs_off_again_for_longer(tmp_path: Path,
                                                           tasks: BackgroundTasks) -> None:
    sup, launch, seen = await supervised(tmp_path, tasks, ["exit 1", DaemonError("image gone")])
    rt, _ = await sup.start("w")
    await until(lambda: statuses(seen).count("backoff") == 2, "the second backoff")
    assert statuses(seen)[-4:] == ["backoff", "preparing", "crashed", "backoff"]
    assert seen[-2].detail == "start failed: image gone"
    assert rt.state is S.BACKOFF and rt.failures == 2 and backoff_delay(2) > backoff_delay(1)
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
    await asyncio.sleep(backoff_delay(1) + 0.5)  # past the restart that was pending
    assert launch.starts == 1 and rt.state is S.STOPPED


async def test_a_manual_stop_holds_against_automatic_starts(tmp_path: Path,
                                                            tasks: BackgroundTasks) -> None:
    sup, launch, seen = await supervised(tmp_path, tasks, ["exec sleep 30"])
    rt, _ = await sup.start("w", auto=True)
    assert rt.state is S.RUNNING and rt.auto_started
    await sup.stop("w", 5)
    assert rt.manual_stop
    await until(lambda: statuses(seen)[-2:] == ["stopping", "stopped"], "the stop events")
    rt, _ = await sup.start("w", auto=True)  # the engine came back: not for this one
    assert rt.state is S.STOPPED and launch.starts == 1
    rt, _ = await sup.start("w")  # the user starts it: that clears the manual stop
    assert rt.state is S.RUNNING and not rt.manual_stop and not rt.auto_started
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


async def test_a_worker_exiting_after_a_manual_stop_is_stopped_not_crashed(
        tmp_path: Path, tasks: BackgroundTasks) -> None:
    sup, launch, seen = await supervised(tmp_path, tasks, ["sleep 1; exit 0"])
    rt, _ = await sup.start("w")
    rt.manual_stop = True  # what a `stop` the daemon did not finish leaves behind
    await until(lambda: rt.state is S.STOPPED and statuses(seen)[-1] == "stopped", "the exit")
    assert "crashed" not in statuses(seen)
    assert launch.starts == 1
