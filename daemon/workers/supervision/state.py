"""The worker lifecycle state machine (SPEC §9) with an explicit transition table."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from client.protocol.messages import ProgressPhase
from daemon.errors import InvalidState
from daemon.sandboxes.boot import BootPhase


class WorkerState(enum.Enum):
    STOPPED = "stopped"
    PREPARING = "preparing"
    INSTALLING = "installing"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    CRASHED = "crashed"
    BACKOFF = "backoff"


_S = WorkerState
# Every state may fall back to STOPPED/CRASHED when an operation fails or the process dies.
TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    _S.STOPPED: frozenset({_S.PREPARING, _S.STARTING, _S.RUNNING}),  # RUNNING: reattach
    _S.PREPARING: frozenset({_S.INSTALLING, _S.STARTING, _S.STOPPED, _S.CRASHED}),
    _S.INSTALLING: frozenset({_S.STARTING, _S.STOPPED, _S.CRASHED}),
    _S.STARTING: frozenset({_S.RUNNING, _S.STOPPING, _S.STOPPED, _S.CRASHED, _S.BACKOFF}),
    _S.RUNNING: frozenset({_S.STOPPING, _S.CRASHED, _S.BACKOFF, _S.STOPPED}),
    _S.STOPPING: frozenset({_S.STOPPED}),
    _S.CRASHED: frozenset({_S.PREPARING, _S.STARTING, _S.STOPPED, _S.BACKOFF}),
    _S.BACKOFF: frozenset({_S.PREPARING, _S.STARTING, _S.STOPPED, _S.CRASHED}),
}


#: Each boot step as the worker's state (``list``, events) and as the client's progress phase.
BOOT_PHASES: dict[BootPhase, tuple[WorkerState, ProgressPhase]] = {
    BootPhase.PROVISION: (_S.PREPARING, "provision"),
    BootPhase.SYNC: (_S.PREPARING, "copy"),
    BootPhase.UP_TO_DATE: (_S.PREPARING, "install"),
    BootPhase.SETUP: (_S.INSTALLING, "setup"),
    BootPhase.INSTALL: (_S.INSTALLING, "install"),
    BootPhase.START: (_S.STARTING, "start"),
}


def check_transition(name: str, current: WorkerState, new: WorkerState) -> None:
    """Raise :class:`InvalidState` naming both states when ``current → new`` is not allowed."""
    if new is not current and new not in TRANSITIONS[current]:
        raise InvalidState(f"worker '{name}' cannot go from {current.value} to {new.value}")


@dataclass(frozen=True, slots=True)
class Backoff:
    """How a crashed worker is restarted: ``initial_s`` doubling to ``max_s``; a worker that ran
    ``max_s`` or longer before it crashed starts over at ``initial_s``. daemon.yaml's
    ``restart_backoff_s`` / ``restart_backoff_max_s`` set them (tests shorten them)."""

    initial_s: float = 1.0
    max_s: float = 60.0

    def delay(self, consecutive_failures: int) -> float:
        """The delay before restart number ``consecutive_failures`` (1-based)."""
        return min(self.max_s, self.initial_s * float(2 ** max(0, consecutive_failures - 1)))


DEFAULT_BACKOFF = Backoff()  # SPEC §9: 1 s doubling to 60 s
