"""What the daemon does on its own (SPEC §2, §9, §10): reattach at start, hold the engine session
(engine up → auto-start, engine down past the grace → stop the auto-started), keep engine truth
fresh, reconcile hand edits of config.yaml, rotate logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

import msgspec

from daemon.background import BackgroundTasks
from daemon.config.entries import WorkerEntry, WorkerKind
from daemon.config.settings import DaemonSettings
from daemon.config.store import ConfigChange, ConfigStore
from daemon.engine.roster import EngineRoster
from daemon.engine.session import EngineSession
from daemon.errors import DaemonError
from daemon.events import EventBus
from daemon.sandboxes import SandboxLayout, SandboxTask
from daemon.workers.commands.logs import rotate_if_needed
from daemon.workers.commands.targets import name_problem
from daemon.workers.supervision.desired import (
    ADDING_FLAG,
    Desired,
    Want,
    Why,
    at_daemon_start,
    load_desired,
)
from daemon.workers.supervision.state import WorkerState
from daemon.workers.supervision.supervisor import Supervisor
from vmm_ffi.params import LaunchParams

log = logging.getLogger("iii.daemon.autopilot")

GRACE_CHECK_INTERVAL_S = 1.0
#: A running worker the engine does not list yet keeps the roster refreshing fast this long.
REGISTRATION_SETTLE_S = 30.0
STARTING_STATES = (WorkerState.PREPARING, WorkerState.INSTALLING, WorkerState.STARTING)
LOG_ROTATE_INTERVAL_S = 5.0
ORPHAN_KILL_TIMEOUT_S = 5.0
SUPERVISED = (WorkerKind.LOCAL, WorkerKind.OCI, WorkerKind.BINARY)  # not Config


class LifecycleTriggers(Protocol):
    """The ``worker::lifecycle`` trigger type the daemon serves on the engine bus
    (``daemon.api.engine_bus.EngineApi``): fed while the session runs, reset when it drops."""

    async def forward_events(self, session: EngineSession) -> None: ...

    def forget_triggers(self) -> None: ...


def kill_orphan(task: SandboxTask) -> None:
    """SIGKILL a launcher we will not adopt and remove its pid file (blocking, bounded)."""
    import signal
    import time

    from daemon.sandboxes.procinfo import is_alive

    pid = task.pid
    if pid is not None:  # reattach just checked it is our launcher (start time, command line)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # its sandbox dies with it (PR_SET_PDEATHSIG)
    deadline = time.monotonic() + ORPHAN_KILL_TIMEOUT_S
    while pid is not None and is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    task.close()
    task.layout.pid_file.unlink(missing_ok=True)


def managed_names(home: Path) -> list[str]:
    """Sandbox directories on disk (dot-directories are deletions in progress)."""
    managed = home / "managed"
    if not managed.is_dir():
        return []
    return sorted(p.name for p in managed.iterdir() if p.is_dir() and not p.name.startswith("."))


def expecting_registrations(supervisor: Supervisor, roster: EngineRoster) -> bool:
    """Workers are starting, or run without being listed yet: engine truth moves now (the
    roster's ``busy``: it then asks the engine every second)."""
    names = roster.names or set()
    now = time.time()
    for rt in supervisor.runtimes():
        if rt.state in STARTING_STATES:
            return True
        if rt.state is WorkerState.RUNNING and rt.name not in names and \
                now - (rt.started_at or 0.0) < REGISTRATION_SETTLE_S:
            return True
    return False


class Autopilot:
    """Runs the daemon's own loops over the components ``daemon/app.py`` built.

    Wire it with ``session.listen(on_up=autopilot.engine_up, on_down=autopilot.engine_down)``
    and ``store.listen(autopilot.config_changed)``.
    """

    def __init__(self, settings: DaemonSettings, store: ConfigStore, supervisor: Supervisor,
                 events: EventBus, session: EngineSession, roster: EngineRoster,
                 tasks: BackgroundTasks, *, layout: Callable[[str], SandboxLayout],
                 api: LifecycleTriggers | None = None) -> None:
        self.settings, self.store, self.supervisor = settings, store, supervisor
        self.events, self.session, self.roster = events, session, roster
        self.tasks, self.api = tasks, api
        self.layout = layout  # WorkerLauncher.layout: where a worker's sandbox lives
        self._grace_fired = False

    # -- start-up ------------------------------------------------------------------------------

    async def reattach(self) -> int:
        """Adopt every sandbox whose launcher still runs, remove stale pid files, and give every
        configured worker its reconciler with the desired state an earlier daemon persisted (a
        user's start holds: such a worker that does not run is started now)."""
        found = await asyncio.to_thread(self._find_running)
        known = [e.name for e in self.store.snapshot() if self._supervised(e)]
        for name in known:
            persisted = await asyncio.to_thread(self._persisted, name)
            running = found.get(name)
            desired = at_daemon_start(persisted, running is not None)
            if running is not None:
                self.supervisor.adopt(name, running[0], running[1], desired)
                log.info("reattached %s (launcher pid %s)", name, running[0].pid)
            else:
                self.supervisor.reconciler(name, desired)
        return len(found)

    def _persisted(self, name: str) -> Desired | None:
        """The persisted desired state; an older daemon's ``manual-stop`` flag is a user's stop."""
        layout = self.layout(name)
        desired = load_desired(layout.dir)
        if desired is None and layout.manual_stop_flag.exists():
            return Desired(want=Want.STOPPED, why=Why.USER)
        return desired

    def _find_running(self) -> dict[str, tuple[SandboxTask, str | None]]:
        """The running launchers of configured workers (blocking). An interrupted setup/install
        run is killed, never adopted; a sandbox without an entry is left alone."""
        known = {e.name for e in self.store.snapshot() if self._supervised(e)}
        found: dict[str, tuple[SandboxTask, str | None]] = {}
        for name in managed_names(self.settings.home):
            layout = self.layout(name)
            task = SandboxTask.reattach(layout)
            if name not in known and (layout.dir / ADDING_FLAG).exists():
                # An add whose daemon died before the entry was written: roll it back.
                log.warning("removing %s: its add was interrupted by a daemon exit", name)
                if task is not None:
                    kill_orphan(task)
                try:
                    layout.remove()
                except DaemonError as exc:  # its launcher would not die: leave it, say so
                    log.error("could not remove the half-added %s: %s", name, exc.message)
                continue
            if layout.oneshot_flag.exists():
                # A setup/install run whose daemon died: it wrote no marker, so kill it and let
                # the next start run it again (never adopt it as the worker).
                if task is not None:
                    log.warning("killing the interrupted %s run of %s (launcher pid %s)",
                                layout.oneshot_flag.read_text().strip(), name, task.pid)
                    kill_orphan(task)
                layout.oneshot_flag.unlink(missing_ok=True)
                continue
            if task is None:
                continue
            if name not in known:
                log.warning("sandbox %s runs but has no config.yaml entry; leaving it alone", name)
                task.close()
                continue
            isolation: str | None = None
            try:
                isolation = msgspec.json.decode(layout.bootstrap.read_bytes(),
                                                type=LaunchParams).backend
            except (OSError, msgspec.DecodeError, msgspec.ValidationError):
                pass
            if isolation == "host":  # a Binary worker is not isolated
                isolation = None
            found[name] = (task, isolation)
        return found

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.session.run())
            tg.create_task(self.roster.run())
            if self.api is not None:
                tg.create_task(self.api.forward_events(self.session))
            tg.create_task(self._grace_loop())
            tg.create_task(self._rotation_loop())
            tg.create_task(self.store.watch())

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        self.tasks.create_task(coro, name=name)

    # -- engine ----------------------------------------------------------------------------------

    async def engine_up(self) -> None:
        self._grace_fired = False
        self.roster.kick()
        for entry in self.store.snapshot():
            if self._supervised(entry):
                self.supervisor.auto_start(entry.name, Why.ENGINE)

    def _supervised(self, entry: WorkerEntry) -> bool:
        """Local/OCI/Binary entries whose name can be a sandbox (a hand-written invalid name is
        listed with the reason, never started)."""
        return entry.kind(self.settings.home) in SUPERVISED and name_problem(entry.name) is None

    async def engine_down(self) -> None:
        self.roster.forget()
        if self.api is not None:
            self.api.forget_triggers()

    async def _grace_loop(self) -> None:
        grace = self.settings.engine_down_grace_s
        while True:
            await asyncio.sleep(GRACE_CHECK_INTERVAL_S)
            down_for = self.session.down_for()
            if grace <= 0 or down_for is None or down_for < grace or self._grace_fired:
                continue
            self._grace_fired = True
            for name in self.supervisor.grace_stop():
                log.info("engine down for %.0fs: stopping %s", down_for, name)

    async def _rotation_loop(self) -> None:
        while True:
            await asyncio.sleep(LOG_ROTATE_INTERVAL_S)
            for rt in self.supervisor.runtimes():
                log_file = self.layout(rt.name).worker_log
                await asyncio.to_thread(rotate_if_needed, log_file, self.settings.log_max_bytes,
                                        self.settings.log_keep)

    # -- config.yaml hand edits --------------------------------------------------------------------

    async def config_changed(self, change: ConfigChange) -> None:
        if change.error is not None:
            log.error("config.yaml cannot be read (%s); workers keep running, nothing is "
                      "written until it is fixed", change.error)
            self.events.publish("*", "config-error", str(change.error))
            return
        for entry in change.removed:
            log.info("%s was removed from config.yaml by hand: stopping it", entry.name)
            self._spawn(self.supervisor.remove(entry.name), f"unmanage:{entry.name}")
        for entry in change.added:
            if self._supervised(entry) and self.session.reachable:
                log.info("%s was added to config.yaml by hand: starting it", entry.name)
                self.supervisor.auto_start(entry.name, Why.CONFIG)
        for entry in change.changed:
            if self.supervisor.runtime(entry.name).state is WorkerState.RUNNING:
                self._spawn(self._restart(entry.name), f"restart:{entry.name}")

    async def _restart(self, name: str) -> None:
        try:
            await self.supervisor.restart(name)
        except Exception as exc:  # noqa: BLE001 - reported, as a failed start is
            log.warning("restart of %s after a config.yaml edit failed: %s", name, exc)


__all__ = ["Autopilot", "LifecycleTriggers", "expecting_registrations", "managed_names"]
