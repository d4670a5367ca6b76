"""``worker.export`` and ``worker.kubernetes`` (SPEC §14); the export itself is
``daemon/export/service.py``."""

from __future__ import annotations

import asyncio
import os

from client.protocol.messages import (
    WorkerExportParams,
    WorkerExportResult,
    WorkerKubernetesParams,
    WorkerKubernetesResult,
)
from daemon.config.entries import WorkerEntry, WorkerKind
from daemon.config.env import flatten_config
from daemon.config.settings import DaemonSettings
from daemon.errors import InvalidArgument, InvalidState
from daemon.export.kubernetes import render as render_kubernetes
from daemon.export.kubernetes import render_yaml
from daemon.export.pin import pin_image
from daemon.export.service import (
    ExportResult,
    check_exportable,
    check_exportable_kind,
    export_to_oci,
)
from daemon.images import ImageStore
from daemon.notify import Notify
from daemon.workers.commands.progress import progress_relay
from daemon.workers.launching.boot_specs import load_project
from daemon.workers.launching.launch import WorkerLauncher
from daemon.workers.supervision.runtime import JobControl
from daemon.workers.supervision.supervisor import Supervisor
from vmm_ffi.statefiles import write_atomic

LAST_EXPORT = "last-export"  # in the sandbox dir: REGISTRY/REPO@DIGEST of the last push


async def export_worker(params: WorkerExportParams, notify: Notify, settings: DaemonSettings,
                        launcher: WorkerLauncher, supervisor: Supervisor, images: ImageStore
                        ) -> WorkerExportResult:
    """A stopped worker is prepared first (provisioned, the project synced, install run when
    the marker says so), as a start would, so the image holds the project as it is now; a
    running one is exported as it runs. It runs as a step of the worker's reconciler, so no
    start, install or sync changes the upper dir while it is read; a stop or a removal
    meanwhile cancels it (-32007)."""
    entry = await launcher.fresh_entry(params.name)
    check_exportable_kind(entry.name, entry.kind(settings.home))
    assert entry.worker_path is not None  # LOCAL workers have one
    layout = launcher.layout(entry.name)
    rec = supervisor.reconciler(entry.name)
    async with progress_relay(notify, params.name, params.progress) as relay:

        async def export_step(control: JobControl) -> ExportResult:
            if rec.rt.pid is None:
                resolved = await launcher.prepare(entry, relay)
                assert resolved.spec is not None
                spec = resolved.spec
            else:
                spec = await load_project(entry.worker_path or "", entry.name)
            check_exportable(entry.name, layout)
            return await export_to_oci(entry.name, spec, layout, images, params.to,
                                       relay.export)

        done = await rec.job(export_step, cancel_on_stop=True)
    if "@sha256:" in done.destination:  # a push: what --kubernetes deploys by default
        await asyncio.to_thread(write_atomic, layout.dir / LAST_EXPORT,
                                done.destination.encode() + b"\n")
    return WorkerExportResult(digest=done.digest, size=done.size,
                              layer_digest=done.layer_digest, destination=done.destination,
                              blobs_uploaded=done.uploaded, blobs_reused=done.reused)


async def kubernetes_yaml(params: WorkerKubernetesParams, entry: WorkerEntry,
                          launcher: WorkerLauncher, images: ImageStore
                          ) -> WorkerKubernetesResult:
    """Deployment + Secret YAML for the worker's exported image (SPEC §14)."""
    settings = launcher.settings
    if entry.kind(settings.home) is not WorkerKind.LOCAL or entry.worker_path is None:
        raise InvalidState(f"worker '{params.name}' is not a local worker: only those are "
                           "exported (a container worker already has its image)")
    image = params.image
    if image is None:
        try:
            image = (launcher.layout(entry.name).dir / LAST_EXPORT).read_text() \
                .strip()
        except OSError:
            raise InvalidArgument(
                f"worker '{entry.name}' has not been pushed yet: run `iii worker export "
                f"{entry.name} --to REGISTRY/REPO:TAG` first, or pass --image "
                "REPO:TAG or REPO@sha256:...") from None
    image = await pin_image(images, image)  # a tag: its digest at the registry now
    spec = await load_project(entry.worker_path, entry.name)
    secret_env = flatten_config(entry.config, environ=os.environ, worker=entry.name)
    docs = render_kubernetes(
        entry.name, image, engine_url=params.engine_url or settings.engine_url,
        memory_mib=spec.resources.memory, cpus=spec.resources.cpus, secret_env=secret_env,
        namespace=params.namespace, runtime_class=params.runtime_class,
        replicas=params.replicas)
    return WorkerKubernetesResult(yaml=render_yaml(docs), image=image)
