"""``worker.add`` (SPEC §5, §7, §10): classify the target, prepare the sandbox and write the
config.yaml entry as steps of the worker's reconciler, then start it when the engine is up.
:class:`~daemon.workers.commands.lifecycle.WorkerLifecycle` owns one :class:`WorkerAdder`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from client.protocol.messages import Worker, WorkerAddParams, WorkerAddResult
from daemon.config.entries import WorkerEntry, WorkerKind
from daemon.config.settings import DaemonSettings
from daemon.config.store import ConfigStore
from daemon.engine.roster import EngineRoster
from daemon.errors import AlreadyExists, DaemonError, InvalidArgument
from daemon.events import EventBus
from daemon.notify import Notify
from daemon.sandboxes import SandboxLayout
from daemon.workers.commands.progress import ProgressRelay, progress_relay
from daemon.workers.commands.targets import TargetKind, classify_target
from daemon.workers.launching.boot_specs import load_project
from daemon.workers.launching.launch import WorkerLauncher
from daemon.workers.supervision.desired import ADDING_FLAG, IDLE, Why, desired_path
from daemon.workers.supervision.runtime import JobControl
from daemon.workers.supervision.state import WorkerState
from daemon.workers.supervision.supervisor import Supervisor
from manifests import WorkerSpec

__all__ = ["WorkerAdder"]

ENGINE_FIRST_TRY_WAIT_S = 2.0  # add on a fresh daemon: its first engine try, at most this


class WorkerAdder:
    """Adds workers; knows the ones being added (``adding``: not in config.yaml yet), which
    ``stop`` and ``remove`` act on too."""

    def __init__(self, settings: DaemonSettings, store: ConfigStore, launcher: WorkerLauncher,
                 supervisor: Supervisor, events: EventBus, engine: EngineRoster,
                 view: Callable[[WorkerEntry], Worker],
                 entry: Callable[[str], WorkerEntry]) -> None:
        self.settings, self.store, self.launcher = settings, store, launcher
        self.supervisor, self.events, self.engine = supervisor, events, engine
        # WorkerLifecycle's: the worker as ``list`` shows it; the entry or NotFound
        self._view, self._entry = view, entry
        self.adding: dict[str, WorkerEntry] = {}

    async def add(self, params: WorkerAddParams, notify: Notify) -> WorkerAddResult:
        target = classify_target(params.target, params.name)
        if params.reset_config and not params.force:
            raise InvalidArgument("--reset-config requires --force")
        async with progress_relay(notify, params.target, params.progress) as relay:
            if target.kind is TargetKind.CONFIG:
                assert target.name is not None
                entry = WorkerEntry(name=target.name)
                self._check_new(entry.name, params.force)
                self._check_bare_force(entry.name, params.target)
                await self.store.add(entry, force=params.force, reset_config=params.reset_config)
                return WorkerAddResult(worker=self._view(entry), warnings=[], started=False)
            spec = None
            if target.kind is TargetKind.LOCAL:
                spec = await load_project(str(target.path), params.name)
                entry = WorkerEntry(name=spec.name, worker_path=spec.project_dir,
                                    config=spec.config or None,
                                    watch=None if params.watch else False)
            else:
                assert target.name is not None and target.image is not None
                entry = WorkerEntry(name=target.name, image=target.image)
            warnings, stopped = await self._add_sandboxed(entry, spec, params, relay)
        started = False  # SPEC §10: an add with the engine up starts the worker
        if not stopped and await self._engine_up() \
                and not self.supervisor.manually_stopped(entry.name):
            try:
                rt, more = await self.supervisor.start(entry.name, Why.ENGINE)
                started = rt.state is WorkerState.RUNNING
                warnings = _merge(warnings, more)
            except DaemonError as exc:  # added all the same: say why it is not running
                warnings = [*warnings, f"added, but the start failed: {exc.message}"]
        return WorkerAddResult(worker=self._view(self._entry(entry.name)), warnings=warnings,
                               started=started)

    async def _engine_up(self) -> bool:
        """Whether the engine is up. A daemon started a moment ago may not have tried it yet:
        wait (briefly) for that first try, so an add with the engine up starts the worker."""
        session = self.engine.session
        if session.reachable or session.down_since is not None:
            return session.reachable
        tries = [asyncio.ensure_future(session.wait_reachable(up)) for up in (True, False)]
        await asyncio.wait(tries, timeout=ENGINE_FIRST_TRY_WAIT_S,
                           return_when=asyncio.FIRST_COMPLETED)
        for t in tries:
            t.cancel()
        return session.reachable

    def _check_new(self, name: str, force: bool) -> None:
        if not force and self.store.find(name) is not None:
            raise AlreadyExists(f"worker '{name}' already exists; use --force")

    def _check_bare_force(self, name: str, target: str) -> None:
        """``add NAME --force`` over a sandboxed worker would replace its entry by a config
        worker and leave its sandbox unmanaged: refuse, naming the forms that do it."""
        old = self.store.find(name)
        kind = None if old is None else old.kind(self.settings.home)
        if kind in (WorkerKind.LOCAL, WorkerKind.OCI):
            assert kind is not None
            raise InvalidArgument(
                f"'{target}' is not a path or an image, and worker '{name}' is a "
                f"{kind.value} worker: re-add it from its project with `iii worker add "
                f"./{name} --force` (a path), or `iii worker remove {name}` first")

    async def _add_sandboxed(self, entry: WorkerEntry, spec: WorkerSpec | None,
                             params: WorkerAddParams, relay: ProgressRelay
                             ) -> tuple[list[str], bool]:
        """Prepare the sandbox and write the entry, as steps of the worker's reconciler: a
        ``stop`` meanwhile wins (the install is killed, the worker is added stopped; its next
        start runs install again), a ``remove`` meanwhile cancels the add (-32007). Returns the
        warnings and whether a stop came in."""
        name = entry.name
        self._check_new(name, params.force)
        fresh = self.store.find(name) is None
        self.adding[name] = entry
        try:
            if params.force:  # a fresh sandbox; a user's stop of the old one no longer holds
                await self.supervisor.stop(name, self.settings.stop_timeout_s, Why.CONFIG)
            # A new worker starts from nothing asked of it, whatever an old sandbox dir says.
            rec = self.supervisor.reconciler(name, IDLE if fresh else None)

            try:
                warnings, stopped = await rec.job(
                    lambda control: self._add_steps(control, entry, spec, params, relay, fresh),
                    cancel_on_stop=True)
            except BaseException:
                if fresh and self.store.find(name) is None:  # nothing of it may stay behind
                    await self.supervisor.remove(name)
                    layout = self.launcher.layout(name)
                    if layout.exists():
                        await asyncio.to_thread(layout.remove)
                raise
        finally:
            self.adding.pop(name, None)
        self.events.publish(name, "added")
        return warnings, stopped or self.supervisor.manually_stopped(name)


    async def _add_steps(self, control: JobControl, entry: WorkerEntry,
                         spec: WorkerSpec | None, params: WorkerAddParams,
                         relay: ProgressRelay, fresh: bool) -> tuple[list[str], bool]:
        """The reconciler job of an add: (re)provision and prepare, then write the entry whole.
        A stop during the prepare still writes the entry (the worker is added stopped)."""
        name, layout = entry.name, self.launcher.layout(entry.name)
        warnings: list[str] = []
        try:
            if params.force and layout.exists():
                relay.note("provision", f"deleting the old sandbox of {name}")
                await asyncio.to_thread(layout.remove)
            if fresh:
                await asyncio.to_thread(_flag_adding, layout, True)
            resolved = await self.launcher.prepare(entry, relay, refresh=params.force)
            warnings = resolved.warnings
        except asyncio.CancelledError:
            if not control.stopped:
                raise
        control.cancellable = False  # the entry is written whole or not at all
        await self.store.add(entry, force=params.force, reset_config=params.reset_config)
        await asyncio.to_thread(_flag_adding, layout, False)
        if spec is not None:
            self.launcher.specs[name] = spec
        if control.stopped:
            note = (f"stopped while being added: {name} is added but stopped; its "
                    "install runs at the next start")
            return [*warnings, note], True
        return warnings, False


def _merge(first: list[str], second: list[str]) -> list[str]:
    """Both lists of warnings, each said once, in order."""
    return list(dict.fromkeys([*first, *second]))


def _flag_adding(layout: SandboxLayout, on: bool) -> None:
    """Mark (or unmark) the sandbox as half-added: see ``desired.ADDING_FLAG``. Blocking."""
    flag = layout.dir / ADDING_FLAG
    if on:
        layout.dir.mkdir(parents=True, exist_ok=True)
        desired_path(layout.dir).unlink(missing_ok=True)  # a stale one is not this worker's
        flag.touch()
    else:
        flag.unlink(missing_ok=True)
