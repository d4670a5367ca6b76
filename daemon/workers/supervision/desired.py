"""A worker's desired state and why (SPEC §9), persisted beside its sandbox.

Commands, the engine going up or down and config.yaml edits only write this; the worker's
reconciler (``daemon/workers/supervision/reconciler.py``) is what acts on it. It lives in
``managed/<name>/desired.json`` (written atomically), so it survives a daemon restart and goes
with the sandbox directory when the worker is removed.
"""

from __future__ import annotations

import enum
from pathlib import Path

import msgspec

from vmm_ffi.statefiles import write_atomic

DESIRED_FILE = "desired.json"
#: In a sandbox dir while its worker is being added (not yet in config.yaml): a daemon that
#: dies meanwhile leaves it, and the next daemon removes that half-added sandbox.
ADDING_FLAG = "adding"


class Want(enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"


class Why(enum.Enum):
    USER = "user"  # a start or stop given by hand (CLI, socket, engine bus)
    ENGINE = "engine"  # the engine came up (auto-start) or stayed down past the grace
    CONFIG = "config"  # an add, or a config.yaml edit


class Desired(msgspec.Struct, frozen=True, kw_only=True):
    want: Want
    why: Why

    @property
    def manual_stop(self) -> bool:
        """A stop the user gave: only a start by hand (or ``add --force``) undoes it."""
        return self.want is Want.STOPPED and self.why is Why.USER

    @property
    def automatic(self) -> bool:
        """Running because the daemon decided so: the engine-down grace may stop it."""
        return self.want is Want.RUNNING and self.why is not Why.USER


#: A worker nobody asked anything of yet (a new entry): stopped until the engine comes up.
IDLE = Desired(want=Want.STOPPED, why=Why.CONFIG)


def desired_path(sandbox_dir: Path) -> Path:
    return sandbox_dir / DESIRED_FILE


def load_desired(sandbox_dir: Path) -> Desired | None:
    """The persisted desired state, or None when none was written (or it is unreadable)."""
    try:
        return msgspec.json.decode(desired_path(sandbox_dir).read_bytes(), type=Desired)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def save_desired(sandbox_dir: Path, desired: Desired) -> None:
    """Write it atomically (blocking, small); creates the sandbox directory if needed."""
    sandbox_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(desired_path(sandbox_dir), msgspec.json.encode(desired) + b"\n", 0o600)


def at_daemon_start(persisted: Desired | None, running: bool) -> Desired:
    """What a restarted daemon wants of a worker. A user's start or stop holds as given. What
    the engine wanted is asked again: the engine's next ``up`` restarts those workers, and its
    grace stops them. A worker found running with nothing persisted (written by an older
    daemon) counts as started by hand, so the engine-down grace leaves it alone."""
    if persisted is None:
        return Desired(want=Want.RUNNING, why=Why.USER) if running else IDLE
    if persisted.why is Why.USER:
        return persisted
    if running:
        return Desired(want=Want.RUNNING, why=persisted.why)
    return Desired(want=Want.STOPPED, why=persisted.why)
