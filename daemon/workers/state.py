"""The worker lifecycle state machine (SPEC §9) with an explicit transition table."""

from __future__ import annotations

import enum

from client.protocol import ProgressPhase
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


BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 60.0
HEALTHY_RESET_S = 60.0


def backoff_delay(consecutive_failures: int) -> float:
    """1 s doubling to 60 s: the delay before restart number ``consecutive_failures`` (1-based)."""
    return min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * float(2 ** max(0, consecutive_failures - 1)))
