"""Per-worker sandboxes: layout on disk, provisioning, project sync, env, boot, launcher tasks.

Typical daemon use (see ``boot.boot_sandbox``)::

    layout = SandboxLayout(home, name)                   # validates the name
    provisioner = Provisioner(home)                      # one per daemon: probes overlay once
    choice = choose_backend(settings.isolation)          # BackendChoice(backend, reason)
    spec = BootSpec(name=name, image_rootfs=str(image.path), image_env=image.config.env,
                    project=worker.project_dir, setup=..., install=..., start=...,
                    manifest_env=worker.env, config_env=..., engine_url=...,
                    backend=choice.backend, cpus=..., memory_mib=..., ca_bundle=...)
    task, prepared = await boot_sandbox(layout, spec, provisioner, progress)
    status = await task.wait()                           # or task.stop(timeout)

After a daemon restart: ``SandboxTask.reattach(layout)`` for every ``managed/<name>/``.
"""

from daemon.sandboxes.backend import (
    BackendChoice,
    NetworkChoice,
    choose_backend,
    choose_ids,
    choose_network,
)
from daemon.sandboxes.boot import (
    BootPhase,
    BootSpec,
    Prepared,
    boot_sandbox,
    launch_params,
    prepare,
    run_script,
    start_params,
)
from daemon.sandboxes.env import build_sandbox_env, place_host_files, resolve_ca_bundle
from daemon.sandboxes.fingerprint import Fingerprint, compute_fingerprint, explain_change
from daemon.sandboxes.layout import RootMode, SandboxLayout, validate_sandbox_id
from daemon.sandboxes.provision import Provisioner, RootDecision
from daemon.sandboxes.sync import SKIP_NAMES, SyncStats, sync_project
from daemon.sandboxes.task import SandboxTask, TaskState, TaskStatus, read_exit_file, sandbox_lock

__all__ = [
    "SKIP_NAMES", "BackendChoice", "BootPhase", "BootSpec", "Fingerprint", "NetworkChoice",
    "Prepared", "Provisioner", "RootDecision", "RootMode", "SandboxLayout", "SandboxTask",
    "SyncStats", "TaskState", "TaskStatus", "boot_sandbox", "build_sandbox_env",
    "choose_backend", "choose_ids", "choose_network", "compute_fingerprint", "explain_change", "launch_params", "place_host_files", "prepare", "read_exit_file",
    "resolve_ca_bundle", "run_script", "sandbox_lock", "start_params", "sync_project",
    "validate_sandbox_id",
]
