"""Hot reload of local workers (SPEC §10): a project edit re-syncs and restarts the worker.

Every running local worker whose config entry does not say ``watch: false`` has a watcher on
its project (``watchfiles``, the one uvicorn uses). A batch of changes is taken once the project
has been quiet for ``QUIET_MS`` (so a save storm is one reload), minus what never reaches the
sandbox (the sync's skip list) and editor droppings. The reload is a restart: the start re-syncs
the project and, when a dependency file changed, runs install first and says why (the marker's
fingerprint). The worker log and ``events.subscribe`` show ``reloading (<file> changed)``. A
reload that fails leaves its error in the log and the events; nothing retries it until the next
edit, so a broken save cannot start a restart storm. A project directory that disappears ends
its watcher (the running worker is left alone) and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Protocol

from watchfiles import Change, awatch

from client.protocol.messages import Worker, WorkerStartParams
from daemon.background import BackgroundTasks
from daemon.config.entries import WorkerKind
from daemon.config.store import ConfigStore
from daemon.errors import DaemonError
from daemon.events import EventBus
from daemon.notify import NULL_NOTIFY, Notify
from daemon.sandboxes import SandboxLayout
from daemon.sandboxes.sync import SKIP_NAMES
from daemon.workers.supervision.supervisor import Supervisor

log = logging.getLogger(__name__)

QUIET_MS = 300  # changes are taken once the project has been quiet this long
MAX_GROUP_MS = 5000  # ... or after this long, however busy it stays
EDITOR_DROPPINGS = (".swp", ".swx", ".swo", "~", ".tmp")


def relevant(project: Path, change: Change, path: str) -> bool:
    """Whether a changed path reaches the sandbox (sync's skip list, editor droppings)."""
    try:
        parts = Path(path).relative_to(project).parts
    except ValueError:
        return False
    if not parts or any(p in SKIP_NAMES for p in parts):
        return False
    name = parts[-1]
    return not (name.endswith(EDITOR_DROPPINGS) or name.startswith((".#", "#"))
                or name in ("4913", ".DS_Store"))


class Restarts(Protocol):
    """What a reload calls: ``worker.restart`` (``daemon.workers.commands.lifecycle.WorkerLifecycle``)."""

    async def restart(self, params: WorkerStartParams, notify: Notify) -> Worker: ...


class HotReload:
    """Owns one watcher task per watched running worker; driven by the worker events."""

    def __init__(self, workers: Restarts, store: ConfigStore, supervisor: Supervisor,
                 events: EventBus, tasks: BackgroundTasks) -> None:
        self._workers, self._store, self._supervisor = workers, store, supervisor
        self._events, self._tasks = events, tasks
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._reloading: set[str] = set()

    async def run(self) -> None:
        """Follow the worker events for the daemon's life (workers reattached at start first)."""
        stream = self._events.stream()
        for runtime in self._supervisor.runtimes():
            if runtime.state.value == "running":
                self._ensure(runtime.name)
        async for event in stream:
            if event.status == "running":
                self._ensure(event.worker)
            elif event.status == "removed" or (event.status == "stopped"
                                               and event.worker not in self._reloading
                                               and self._supervisor.manually_stopped(
                                                   event.worker)):
                self._cancel(event.worker)  # a failed reload keeps watching: the next save fixes

    def _project(self, name: str) -> Path | None:
        entry = self._store.find(name)
        if entry is None or entry.kind(self._store.home) is not WorkerKind.LOCAL \
                or entry.watch is False or entry.worker_path is None:
            return None
        return Path(entry.worker_path)

    def _ensure(self, name: str) -> None:
        if name in self._watchers and not self._watchers[name].done():
            return
        project = self._project(name)
        if project is not None and project.is_dir():
            self._watchers[name] = self._tasks.create_task(self._watch(name, project),
                                                           name=f"watch:{name}")

    def _cancel(self, name: str) -> None:
        task = self._watchers.pop(name, None)
        if task is not None:
            task.cancel()

    async def _watch(self, name: str, project: Path) -> None:
        async for changes in awatch(project, debounce=MAX_GROUP_MS, step=QUIET_MS,
                                    watch_filter=lambda c, p: relevant(project, c, p),
                                    recursive=True, ignore_permission_denied=True):
            if not project.is_dir():
                self._say(name, f"hot reload stopped: the project directory {project} is gone "
                          "(the worker keeps running)")
                return
            paths = sorted({str(Path(p).relative_to(project)) for _, p in changes})
            await self._reload(name, paths)

    async def _reload(self, name: str, paths: list[str]) -> None:
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        self._say(name, f"reloading ({shown} changed)")
        self._reloading.add(name)
        try:
            await self._workers.restart(WorkerStartParams(name=name), NULL_NOTIFY)
        except DaemonError as exc:
            self._say(name, f"reload failed: {exc.message}")
        finally:
            self._reloading.discard(name)

    def _say(self, name: str, message: str) -> None:
        log.info("worker %s: %s", name, message)
        with contextlib.suppress(OSError), \
                open(SandboxLayout(self._store.home, name).worker_log, "a") as worker_log:
            worker_log.write(f"[iii] {message}\n")
        status = "reloading" if message.startswith("reloading") else "watch"
        self._events.publish(name, status, message)

