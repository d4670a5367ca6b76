"""The worker lifecycle service behind ``worker.*`` (SPEC §5, §7, §9).

Each method validates, then drives its collaborators: the config store (config.yaml), the image
store, the launcher, the sandboxes and the :class:`Supervisor`. What the daemon does on its own
(engine up/down, hand edits) lives in ``daemon/workers/autopilot.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import msgspec

from client.protocol.messages import (
    EmptyResult,
    ManifestView,
    Resources,
    Scripts,
    Worker,
    WorkerAddParams,
    WorkerAddResult,
    WorkerExecParams,
    WorkerExecResult,
    WorkerExecSignalParams,
    WorkerExportParams,
    WorkerExportResult,
    WorkerInspectResult,
    WorkerKubernetesParams,
    WorkerKubernetesResult,
    WorkerListResult,
    WorkerLogsParams,
    WorkerLogsResult,
    WorkerNameParams,
    WorkerPaths,
    WorkerRemoveResult,
    WorkerStartParams,
    WorkerStopParams,
)
from daemon.config.entries import WorkerEntry, WorkerKind
from daemon.config.settings import DaemonSettings
from daemon.config.store import ConfigStore
from daemon.engine.roster import EngineRoster
from daemon.errors import (
    DaemonError,
    InvalidState,
    NotFound,
)
from daemon.events import EventBus
from daemon.images import ImageStore
from daemon.notify import ClientGone, Notify
from daemon.sandboxes import SandboxLayout
from daemon.workers.commands.adding import WorkerAdder
from daemon.workers.commands.exec import ExecRegistry, enter_spec, run_exec
from daemon.workers.commands.exporting import export_worker, kubernetes_yaml
from daemon.workers.commands.isolation import sandbox_isolation
from daemon.workers.commands.logs import follow, tail
from daemon.workers.commands.progress import progress_relay
from daemon.workers.commands.targets import name_problem
from daemon.workers.launching.boot_specs import load_project
from daemon.workers.launching.launch import WorkerLauncher
from daemon.workers.supervision.desired import Why
from daemon.workers.supervision.runtime import WorkerRuntime
from daemon.workers.supervision.supervisor import Supervisor

log = logging.getLogger("iii.daemon.workers")



class WorkerLifecycle:
    """Implements ``daemon.api.services.WorkerService``; built in ``daemon/app.py``."""

    def __init__(self, settings: DaemonSettings, store: ConfigStore, images: ImageStore,
                 launcher: WorkerLauncher, supervisor: Supervisor, events: EventBus,
                 engine: EngineRoster) -> None:
        self.settings, self.store, self.images = settings, store, images
        self.launcher, self.supervisor, self.events = launcher, supervisor, events
        self.engine = engine  # engine truth (``engine_registered``) over the engine session
        self._execs = ExecRegistry()
        self._adder = WorkerAdder(settings, store, launcher, supervisor, events, engine,
                                  self.view, self.entry)
        self.adding = self._adder.adding  # being added: not in config.yaml yet

    # -- helpers ------------------------------------------------------------------------------

    def layout(self, name: str) -> SandboxLayout:
        return self.launcher.layout(name)

    def entry(self, name: str) -> WorkerEntry:
        entry = self.store.find(name)
        if entry is None:
            raise NotFound(f"worker '{name}' not found; see `iii worker list`")
        return entry

    def engine_reachable(self) -> bool:
        return self.engine.session.reachable

    def view(self, entry: WorkerEntry, rt: WorkerRuntime | None = None) -> Worker:
        kind = entry.kind(self.settings.home)
        problem = name_problem(entry.name)
        if problem is not None:  # hand-written: shown with the reason, never supervised
            return Worker(name=entry.name, type=kind.value,
                          source=entry.worker_path or entry.image, status="stopped",
                          last_error=problem)
        rt = rt or self.supervisor.runtime(entry.name)
        spec = self.launcher.specs.get(entry.name)
        registered = None
        if self.engine.names is not None and self.engine_reachable():
            registered = entry.name in self.engine.names
        return Worker(
            name=entry.name, type=kind.value, source=entry.worker_path or entry.image,
            status=rt.state.value, pid=rt.pid, isolation=rt.isolation,  # type: ignore[arg-type]
            engine_registered=registered, restarts=rt.restarts,
            last_exit_code=rt.last_exit_code, last_error=rt.last_error,
            started_at=rt.started_at,
            deps_installed=kind is WorkerKind.LOCAL and self.launcher.deps_installed(entry.name),
            image=spec.base_image if spec else entry.image,
            resources=Resources(memory=spec.resources.memory, cpus=spec.resources.cpus)
            if spec else None)

    # -- worker.add: daemon/workers/commands/adding.py ----------------------------------------------------

    async def add(self, params: WorkerAddParams, notify: Notify) -> WorkerAddResult:
        return await self._adder.add(params, notify)

    # -- start / stop / restart / remove ---------------------------------------------------------

    def _startable(self, name: str) -> WorkerEntry:
        entry = self.entry(name)
        if entry.kind(self.settings.home) is WorkerKind.CONFIG:
            raise InvalidState(f"worker '{name}' is a config worker served by the engine; "
                               "it cannot be started or stopped on its own")
        return entry

    async def start(self, params: WorkerStartParams, notify: Notify) -> Worker:
        entry = self._startable(params.name)
        async with progress_relay(notify, params.name, params.progress) as relay:
            rt, warnings = await self.supervisor.start(params.name, Why.USER, relay)
            for warning in warnings:  # e.g. no hardware isolation: said on every start
                relay.note("start", f"warning: {warning}")
        return self._with_warnings(self.view(entry, rt), warnings)

    async def stop(self, params: WorkerStopParams) -> Worker:
        adding = self.adding.get(params.name)
        entry = adding if adding is not None and self.store.find(params.name) is None \
            else self._startable(params.name)
        rt = await self.supervisor.stop(params.name, self._timeout(params.timeout_s))
        return self.view(entry, rt)

    def _timeout(self, given: float | None) -> float:
        return self.settings.stop_timeout_s if given is None else given

    async def restart(self, params: WorkerStartParams, notify: Notify) -> Worker:
        entry = self._startable(params.name)
        async with progress_relay(notify, params.name, params.progress) as relay:
            rt, warnings = await self.supervisor.restart(params.name, relay)
        return self._with_warnings(self.view(entry, rt), warnings)

    async def remove(self, params: WorkerNameParams) -> WorkerRemoveResult:
        name = params.name
        if self.store.find(name) is None and name not in self.adding:
            self.entry(name)  # NotFound
        await self.supervisor.remove(name)  # cancels an add, a start, an install in flight
        if self.store.find(name) is not None:
            await self.store.remove(name)
        layout = self.layout(name)
        freed = await asyncio.to_thread(layout.remove) if layout.exists() else 0
        self.launcher.forget(name)
        self.events.publish(name, "removed")
        return WorkerRemoveResult(removed=True, freed_bytes=freed)

    @staticmethod
    def _with_warnings(worker: Worker, warnings: list[str]) -> Worker:
        return msgspec.structs.replace(worker, warnings=list(warnings)) if warnings else worker

    # -- reads ----------------------------------------------------------------------------------

    async def list(self) -> WorkerListResult:
        age = await self.engine.fresh()
        if not self.engine_reachable():
            age = None
        error = self.store.error
        return WorkerListResult(workers=[self.view(e) for e in self.store.snapshot()],
                                engine_age_s=None if age is None else round(age, 3),
                                config_error=None if error is None else str(error))

    async def inspect(self, params: WorkerNameParams) -> WorkerInspectResult:
        entry = self.entry(params.name)
        base = self.view(entry)
        manifest, warnings = None, []
        if entry.worker_path is not None:
            try:
                spec = await load_project(entry.worker_path, entry.name)
                self.launcher.specs[entry.name] = spec
                manifest = ManifestView(
                    kind=spec.kind, package_manager=spec.package_manager, entry=spec.entry,
                    base_image=spec.base_image,
                    scripts=Scripts(setup=spec.scripts.setup, install=spec.scripts.install,
                                    start=spec.scripts.start),
                    env=dict(spec.env),
                    resources=Resources(memory=spec.resources.memory, cpus=spec.resources.cpus))
                warnings = list(spec.warnings)
            except DaemonError as exc:
                warnings = [f"manifest: {exc.message}"]
        layout = self.layout(entry.name)
        fields = {f: getattr(base, f) for f in base.__struct_fields__
                  if f != "warnings"}  # inspect's own: the manifest's
        detail = None
        if base.pid is not None:
            detail = await asyncio.to_thread(sandbox_isolation, layout)
        # A config worker is served by the engine: it has no sandbox and no logs of ours.
        paths = None if entry.kind(self.settings.home) is WorkerKind.CONFIG else WorkerPaths(
            sandbox=str(layout.dir), logs=str(layout.worker_log))
        return WorkerInspectResult(**fields, manifest=manifest, warnings=warnings, paths=paths,
                                   isolation_detail=detail)

    async def exec(self, params: WorkerExecParams, notify: Notify) -> WorkerExecResult:
        fds = notify.take_fds()
        try:
            self.entry(params.name)
            if self.view(self.entry(params.name)).pid is None:
                raise InvalidState(f"worker '{params.name}' is not running; start it first")
            spec = await asyncio.to_thread(enter_spec, self.layout(params.name), params)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return await run_exec(spec, fds, params, self._execs)

    async def exec_signal(self, params: WorkerExecSignalParams) -> EmptyResult:
        self._execs.signal(params.exec_id, params.signal)
        return EmptyResult()

    async def export(self, params: WorkerExportParams, notify: Notify) -> WorkerExportResult:
        """SPEC §14: see ``daemon/workers/commands/exporting.py``."""
        return await export_worker(params, notify, self.settings, self.launcher,
                                   self.supervisor, self.images)

    async def kubernetes(self, params: WorkerKubernetesParams) -> WorkerKubernetesResult:
        """Deployment + Secret YAML for the worker's exported image (SPEC §14)."""
        return await kubernetes_yaml(params, self.entry(params.name), self.launcher,
                                     self.images)

    async def logs(self, params: WorkerLogsParams, notify: Notify) -> WorkerLogsResult:
        self.entry(params.name)
        log_file = self.layout(params.name).worker_log
        lines = await asyncio.to_thread(tail, log_file, params.tail, self.settings.log_keep)
        if params.follow:
            from client.protocol.messages import LogNotification

            async def send(line: str) -> None:
                await notify("log", LogNotification(name=params.name, line=line))

            async def stream() -> None:
                with contextlib.suppress(ClientGone):
                    await follow(log_file, send)

            notify.spawn(stream())
        return WorkerLogsResult(lines=lines)

    async def aclose(self, *, stop_workers: bool) -> None:
        await self.supervisor.close_all(stop_workers=stop_workers)
        await self._execs.aclose()  # the fork server; running execs end with it
