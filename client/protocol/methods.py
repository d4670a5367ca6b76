"""The method tables: socket method → (params type, result type), and iii function id on the
engine bus → the socket method it is served by."""

from __future__ import annotations

from client.protocol.base import Params, Result
from client.protocol.messages import (
    DaemonInfoResult,
    DaemonShutdownParams,
    EmptyResult,
    ImageListResult,
    ImagePullParams,
    ImagePullResult,
    NoParams,
    SandboxExecStdioParams,
    Worker,
    WorkerAddParams,
    WorkerAddResult,
    WorkerExecParams,
    WorkerExecResult,
    WorkerExecSignalParams,
    WorkerExportParams,
    WorkerExportResult,
    WorkerInspectParams,
    WorkerInspectResult,
    WorkerKubernetesParams,
    WorkerKubernetesResult,
    WorkerListResult,
    WorkerLogsParams,
    WorkerLogsResult,
    WorkerRemoveParams,
    WorkerRemoveResult,
    WorkerRestartParams,
    WorkerStartParams,
    WorkerStopParams,
)
from client.protocol.sandbox import SANDBOX_METHODS

#: The type of a ``worker::lifecycle`` trigger (its config: ``LifecycleTriggerConfig``).
LIFECYCLE_TRIGGER_TYPE = "worker::lifecycle"

# iii function id → socket method whose params and result it takes and returns
ENGINE_FUNCTIONS: dict[str, str] = {
    "worker::list": "worker.list",
    "worker::status": "worker.inspect",
    "worker::logs": "worker.logs",
    "worker::start": "worker.start",
    "worker::stop": "worker.stop",
    "worker::restart": "worker.restart",
    "worker::add": "worker.add",
    "worker::remove": "worker.remove",
}
#: Functions that change workers: served only with ``engine_control: true`` in daemon.yaml.
ENGINE_CONTROL_FUNCTIONS = frozenset({"worker::start", "worker::stop", "worker::restart",
                                      "worker::add", "worker::remove"})


# method name → (params type, result type)
METHODS: dict[str, tuple[type[Params], type[Result]]] = {
    "daemon.info": (NoParams, DaemonInfoResult),
    "daemon.shutdown": (DaemonShutdownParams, EmptyResult),
    "worker.add": (WorkerAddParams, WorkerAddResult),
    "worker.start": (WorkerStartParams, Worker),
    "worker.restart": (WorkerRestartParams, Worker),
    "worker.stop": (WorkerStopParams, Worker),
    "worker.remove": (WorkerRemoveParams, WorkerRemoveResult),
    "worker.list": (NoParams, WorkerListResult),
    "worker.inspect": (WorkerInspectParams, WorkerInspectResult),
    "worker.logs": (WorkerLogsParams, WorkerLogsResult),
    "worker.exec": (WorkerExecParams, WorkerExecResult),
    "worker.exec_signal": (WorkerExecSignalParams, EmptyResult),
    "worker.export": (WorkerExportParams, WorkerExportResult),
    "worker.kubernetes": (WorkerKubernetesParams, WorkerKubernetesResult),
    "image.pull": (ImagePullParams, ImagePullResult),
    "image.list": (NoParams, ImageListResult),
    "events.subscribe": (NoParams, EmptyResult),
}
# the sandbox service's methods (their types: client/protocol/sandbox.py)
METHODS.update(SANDBOX_METHODS)
#: Socket-only sandbox methods (not upstream functions: never on the engine bus).
SANDBOX_SOCKET_METHODS: dict[str, tuple[type[Params], type[Result]]] = {
    "sandbox.exec_stdio": (SandboxExecStdioParams, WorkerExecResult),
    "sandbox.exec_signal": (WorkerExecSignalParams, EmptyResult),
}
METHODS.update(SANDBOX_SOCKET_METHODS)
