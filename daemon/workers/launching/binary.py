"""Binary workers (SPEC §5): ``$III_HOME/workers/<name>`` run as a host process, not sandboxed.

They use the same launcher process model as sandboxes (backend ``host``): detached, signals
forwarded, ``exit.json`` recorded, reattached after a daemon restart, logs in
``managed/<name>/logs/worker.log``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from daemon.config.entries import WorkerEntry
from daemon.config.env import flatten_config
from daemon.sandboxes import SandboxLayout, SandboxTask
from manifests.spec import RESERVED_ENV_KEYS
from vmm_ffi.params import DirectoryRoot, LaunchParams

# The daemon's own settings are not the worker's business.
_HIDDEN_PREFIXES = ("III_", "LISTEN_", "NOTIFY_SOCKET")


def binary_env(entry: WorkerEntry, engine_url: str, environ: Mapping[str, str]) -> dict[str, str]:
    """A host process inherits the host env (as a service would), minus the daemon's own
    variables, plus its ``config:`` env and the reserved ``III_*`` values, which always win."""
    env = {k: v for k, v in environ.items() if not k.startswith(_HIDDEN_PREFIXES)}
    config_env = flatten_config(entry.config, environ=environ, worker=entry.name)
    env.update({k: v for k, v in config_env.items() if k not in RESERVED_ENV_KEYS})
    env["III_URL"] = env["III_ENGINE_URL"] = engine_url
    env["III_WORKER_NAME"] = entry.name
    env["III_ISOLATION"] = "none"
    return env


async def start_binary(layout: SandboxLayout, entry: WorkerEntry, binary: str,
                       engine_url: str) -> SandboxTask:
    """Start the binary under a ``host`` launcher; return the running task."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    params = LaunchParams(
        name=entry.name, backend="host", rootfs=DirectoryRoot(path="/"), merged="/",
        argv=[binary], env=binary_env(entry, engine_url, os.environ), workdir=str(layout.dir),
        log_path=str(layout.worker_log), exit_path=str(layout.exit_file),
        hostname=entry.name[:63])
    task = SandboxTask(layout)
    await task.start(params)
    return task
