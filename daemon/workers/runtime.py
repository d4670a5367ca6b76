"""What a worker's reconciler works with: the launcher seam's types and the worker's actual
state (``WorkerRuntime``, written only by its reconciler)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from daemon.images.models import PullProgress
from daemon.sandboxes import BootPhase, SandboxTask
from daemon.workers.desired import IDLE, Desired
from daemon.workers.state import WorkerState


class BootSink(Protocol):
    """Where a launch reports its progress (``daemon.workers.progress.ProgressRelay`` is one)."""

    def boot(self, phase: BootPhase, message: str) -> None: ...

    def pull(self, progress: PullProgress) -> None: ...


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


__all__ = ["BootSink", "JobControl", "Launch", "Launched", "WorkerRuntime"]
