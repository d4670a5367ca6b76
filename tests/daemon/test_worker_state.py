"""The worker state machine (SPEC §9), table-driven: the paths the supervisor takes must be
allowed, the impossible ones refused with a message naming both states; backoff delays."""

from __future__ import annotations

import itertools

import pytest

from daemon.errors import InvalidState
from daemon.workers.supervision.state import (
    DEFAULT_BACKOFF,
    TRANSITIONS,
    Backoff,
    WorkerState,
    check_transition,
)

S = WorkerState

PATHS = {
    "start-local": [S.STOPPED, S.PREPARING, S.INSTALLING, S.STARTING, S.RUNNING],
    "start-no-install": [S.STOPPED, S.PREPARING, S.STARTING, S.RUNNING],
    "stop": [S.RUNNING, S.STOPPING, S.STOPPED],
    "crash-backoff-restart": [S.RUNNING, S.CRASHED, S.BACKOFF, S.PREPARING, S.STARTING,
                              S.RUNNING],
    "restart-fails-again": [S.BACKOFF, S.CRASHED, S.BACKOFF],
    "stop-while-backoff": [S.BACKOFF, S.STOPPED],
    "start-fails": [S.STOPPED, S.PREPARING, S.STOPPED],
    "install-fails": [S.PREPARING, S.INSTALLING, S.STOPPED],
    "reattach": [S.STOPPED, S.RUNNING],
    "manual-start-after-crash": [S.CRASHED, S.PREPARING],
}

REFUSED = [
    (S.STOPPED, S.STOPPING), (S.STOPPED, S.CRASHED), (S.STOPPED, S.BACKOFF),
    (S.STOPPING, S.RUNNING), (S.STOPPING, S.CRASHED), (S.STOPPING, S.PREPARING),
    (S.RUNNING, S.PREPARING), (S.RUNNING, S.INSTALLING), (S.INSTALLING, S.PREPARING),
    (S.CRASHED, S.RUNNING), (S.BACKOFF, S.RUNNING),
]


@pytest.mark.parametrize("path", PATHS.values(), ids=PATHS.keys())
def test_the_supervisors_paths_are_allowed(path: list[WorkerState]) -> None:
    for current, new in itertools.pairwise(path):
        check_transition("w", current, new)


@pytest.mark.parametrize("current, new", REFUSED,
                         ids=[f"{a.value}-{b.value}" for a, b in REFUSED])
def test_impossible_transitions_are_refused_naming_both(current: WorkerState,
                                                        new: WorkerState) -> None:
    with pytest.raises(InvalidState, match=f"from {current.value} to {new.value}"):
        check_transition("w", current, new)


@pytest.mark.parametrize("state", list(WorkerState), ids=[s.value for s in WorkerState])
def test_every_state_is_in_the_table_and_staying_is_allowed(state: WorkerState) -> None:
    assert state in TRANSITIONS
    check_transition("w", state, state)
    assert state is S.STOPPED or S.STOPPED in TRANSITIONS[state]  # a way out of every state


@pytest.mark.parametrize("failures, delay", [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0),
                                             (6, 32.0), (7, 60.0), (50, 60.0)])
def test_backoff_doubles_from_one_second_to_the_cap(failures: int, delay: float) -> None:
    assert DEFAULT_BACKOFF.delay(failures) == delay


def test_a_shorter_backoff_keeps_its_shape() -> None:
    short = Backoff(initial_s=0.05, max_s=0.2)
    assert [short.delay(n) for n in (1, 2, 3, 4)] == [0.05, 0.1, 0.2, 0.2]
