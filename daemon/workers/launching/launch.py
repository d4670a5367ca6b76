"""Launching one worker: resolve its boot (manifest, image) and boot its sandbox (SPEC §7, §9).

:class:`WorkerLauncher` is the ``launch`` function the :class:`~daemon.workers.supervision.supervisor.Supervisor`
calls for every start and restart. It also keeps what a launch learns that ``list`` shows
cheaply: each local worker's resolved manifest and whether its dependency marker is present.
"""

from __future__ import annotations

import logging

from daemon.config.entries import WorkerEntry, WorkerKind
from daemon.config.settings import DaemonSettings
from daemon.config.store import ConfigStore
from daemon.errors import DaemonError, NotFound
from daemon.images import ImageStore
from daemon.sandboxes import Provisioner, SandboxLayout, SandboxTask, boot_sandbox, prepare
from daemon.workers.launching.binary import start_binary
from daemon.workers.launching.boot_specs import ResolvedBoot, load_project, resolve_boot
from daemon.workers.supervision.runtime import BootSink, Launched
from manifests import WorkerSpec

__all__ = ["WorkerLauncher"]

log = logging.getLogger("iii.daemon.workers")


class WorkerLauncher:
    """Boots workers; one per daemon, shared by the supervisor and the lifecycle."""

    def __init__(self, settings: DaemonSettings, store: ConfigStore, images: ImageStore,
                 provisioner: Provisioner) -> None:
        self.settings, self.store, self.images = settings, store, images
        self.provisioner = provisioner
        self.specs: dict[str, WorkerSpec] = {}  # resolved manifests, for list and inspect
        self._deps: dict[str, bool] = {}  # marker present? cached: list is the hot path

    def layout(self, name: str) -> SandboxLayout:
        """Where worker ``name``'s sandbox lives: the one place the daemon's workers get it."""
        return SandboxLayout(self.settings.home, name)

    async def fresh_entry(self, name: str) -> WorkerEntry:
        """The entry as config.yaml holds it now: a hand edit made just before a start (or an
        export) is honoured, and reconciled by the store's listeners, even if the watcher has
        not polled yet."""
        await self.store.poll()
        entry = self.store.find(name)
        if entry is None:
            raise NotFound(f"worker '{name}' not found; see `iii worker list`")
        return entry

    async def launch(self, name: str, progress: BootSink) -> Launched:
        """THE launcher seam: the entry as config.yaml holds it now, resolved, prepared and
        started; progress goes to ``progress``. Cancelling it kills what it started."""
        entry = await self.fresh_entry(name)
        if entry.kind(self.settings.home) is WorkerKind.BINARY:
            binary = self.settings.home / "workers" / name
            task = await start_binary(self.layout(name), entry, str(binary),
                                      self.settings.engine_url)
            return Launched(task=task, isolation=None)
        resolved, booted = await self._boot(entry, progress, start=True)
        assert booted is not None
        return Launched(task=booted, isolation=resolved.boot.backend, warnings=resolved.warnings)

    async def prepare(self, entry: WorkerEntry, progress: BootSink, *,
                      refresh: bool = False) -> ResolvedBoot:
        """Resolve and prepare the sandbox without starting it (``add``, ``export``)."""
        resolved, _ = await self._boot(entry, progress, start=False, refresh=refresh)
        return resolved

    async def _boot(self, entry: WorkerEntry, progress: BootSink, *,
                    start: bool, refresh: bool = False
                    ) -> tuple[ResolvedBoot, SandboxTask | None]:
        """The one resolve → prepare (→ start) sequence."""
        name = entry.name
        resolved = await resolve_boot(entry, self.settings, self.images, progress.pull,
                                      refresh=refresh)
        if resolved.spec is not None:
            self.specs[name] = resolved.spec
        task = None
        try:
            if start:
                task, _ = await boot_sandbox(self.layout(name), resolved.boot, self.provisioner,
                                             progress.boot)
            else:
                await prepare(self.layout(name), resolved.boot, self.provisioner, progress.boot)
        finally:
            self.forget_deps(name)  # the marker may have been written (or not)
        return resolved, task

    async def preload_specs(self) -> None:
        """Resolve every local worker's manifest once at start-up, so that ``list`` shows
        images and resources before the first start (an unusable manifest is left out)."""
        for entry in self.store.snapshot():
            if entry.worker_path is not None and entry.name not in self.specs:
                try:
                    self.specs[entry.name] = await load_project(entry.worker_path, entry.name)
                except DaemonError as exc:
                    log.info("manifest of %s: %s", entry.name, exc.message)

    def deps_installed(self, name: str) -> bool:
        known = self._deps.get(name)
        if known is None:
            known = self._deps[name] = self.layout(name).marker.exists()
        return known

    def forget_deps(self, name: str) -> None:
        self._deps.pop(name, None)

    def forget(self, name: str) -> None:
        self.specs.pop(name, None)
        self._deps.pop(name, None)
