"""What a worker's reconciler works with: the launcher seam's types and the worker's actual
state (``WorkerRuntime``, written only by its reconciler)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from daemon.images.models import PullProgress
from daemon.sandboxes import BootPhase, SandboxTask
from daemon.workers.supervision.desired import IDLE, Desired
from daemon.workers.supervision.state import WorkerState

T = TypeVar("T")


class BootSink(Protocol):
    """Where a launch reports its progress (``daemon.workers.commands.progress.ProgressRelay`` is one)."""

    def boot(self, phase: BootPhase, message: str) -> None: ...

    def pull(self, progress: PullProgress) -> None: ...


class BootFanOut:
    """The progress sink of a launch: each boot step to ``on_phase`` (the worker's state and
    events), and everything to every waiting client's sink (``sinks`` is live: clients come
    and go during the launch)."""

    def __init__(self, on_phase: Callable[[BootPhase, str], None],
                 sinks: list[BootSink]) -> None:
        self._on_phase, self._sinks = on_phase, sinks

    def boot(self, phase: BootPhase, message: str) -> None:
        self._on_phase(phase, message)
        for sink in list(self._sinks):
            sink.boot(phase, message)

    def pull(self, progress: PullProgress) -> None:
        for sink in list(self._sinks):
            sink.pull(progress)


@dataclass
class Launched:
    """What ``launch`` hands back: the running sandbox and facts worth showing."""

    task: SandboxTask
    isolation: str | None  # None: a Binary worker, a host process
    warnings: list[str] = field(default_factory=list)


#: ``WorkerLauncher.launch``: the one launcher seam (name, progress sink) → running sandbox.
Launch = Callable[[str, BootSink], Coroutine[Any, Any, Launched]]


@dataclass
class WorkerRuntime:
    """What the daemon knows of one worker; written only by its reconciler."""

    name: str
    desired: Desired = IDLE
    state: WorkerState = WorkerState.STOPPED
    task: SandboxTask | None = None
    isolation: str | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    last_error: str | None = None  # the launcher's reason, e.g. "killed: out of memory (...)"
    started_at: float | None = None
    failures: int = 0

    @property
    def pid(self) -> int | None:
        return self.task.pid if self.task is not None and self.state is WorkerState.RUNNING \
            else None


class JobControl:
    """Handed to a job's body: why it was cancelled, and whether it may still be."""

    def __init__(self) -> None:
        self.cancellable = True  # a job sets False before a step that must not be torn
        self.stopped = False  # cancelled because a stop was requested (not a removal)


@dataclass
class Job(Generic[T]):
    """A one-shot step queued on a worker's reconciler (an add's prepare, an export)."""

    body: Callable[[JobControl], Coroutine[Any, Any, T]]
    future: asyncio.Future[T]
    gen: int  # the request number it was queued at: only a later stop cancels it
    cancel_on_stop: bool
    control: JobControl = field(default_factory=JobControl)


__all__ = ["BootFanOut", "BootSink", "Job", "JobControl", "Launch", "Launched", "WorkerRuntime"]
