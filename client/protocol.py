"""Wire types of the daemon's socket protocol (SPEC §11), shared by the daemon and every client.

Framing: one JSON-RPC 2.0 object per line (UTF-8, ``\\n``), at most ``MAX_LINE_BYTES`` per line.
Params structs forbid unknown fields (the daemon answers -32602); result and notification
structs accept unknown fields so an older client keeps working when the daemon adds one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

# Re-exported: defined without msgspec so the fast CLI path can use them.
from client.wire_constants import MAX_LINE_BYTES, PROTOCOL_VERSION, ErrorCode  # noqa: F401


class Params(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every request's params."""


class Result(msgspec.Struct, kw_only=True):
    """Base of every result and notification payload (unknown fields tolerated)."""


WorkerName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
WorkerType = Literal["local", "oci", "binary", "config"]
WorkerStatus = Literal[
    "stopped", "preparing", "installing", "starting", "running", "stopping", "crashed", "backoff"
]
Isolation = Literal["libkrun", "namespace"]
ProgressPhase = Literal["pull", "extract", "provision", "copy", "setup", "install", "start"]


# ---- shared result pieces -------------------------------------------------------------------

class Resources(Result):
    memory: int
    cpus: int


class Scripts(Result):
    setup: str
    install: str
    start: str


class Worker(Result):
    name: str
    type: WorkerType
    source: str | None = None
    status: WorkerStatus = "stopped"
    pid: int | None = None
    isolation: Isolation | None = None
    engine_registered: bool | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    started_at: float | None = None
    deps_installed: bool = False
    image: str | None = None
    resources: Resources | None = None


class ManifestView(Result):
    kind: str
    package_manager: str | None
    entry: str | None
    base_image: str
    scripts: Scripts
    env: dict[str, str]
    resources: Resources


class WorkerPaths(Result):
    sandbox: str
    logs: str


class WorkerInspectResult(Worker):
    manifest: ManifestView | None = None
    warnings: list[str] = []
    paths: WorkerPaths | None = None


class BackendAvailability(Result):
    available: bool
    reason: str | None = None


class IsolationInfo(Result):
    default: str
    backends: dict[str, BackendAvailability]


class EngineInfo(Result):
    url: str
    reachable: bool


# ---- daemon.* ---------------------------------------------------------------------------------

class DaemonInfoResult(Result):
    version: str
    protocol: int
    pid: int
    home: str
    config_path: str
    socket: str
    engine: EngineInfo
    isolation: IsolationInfo


class DaemonShutdownParams(Params, frozen=True):
    stop_workers: bool = True


class EmptyResult(Result):
    pass


# ---- worker.* ---------------------------------------------------------------------------------

class WorkerAddParams(Params, frozen=True):
    target: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    name: WorkerName | None = None
    force: bool = False
    reset_config: bool = False
    progress: bool = False


class WorkerAddResult(Result):
    worker: Worker
    warnings: list[str]
    started: bool


class WorkerStartParams(Params, frozen=True):
    name: WorkerName
    progress: bool = False


WorkerRestartParams = WorkerStartParams


class WorkerStopParams(Params, frozen=True):
    name: WorkerName
    timeout_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0


class WorkerNameParams(Params, frozen=True):
    name: WorkerName


WorkerRemoveParams = WorkerNameParams
WorkerInspectParams = WorkerNameParams


class WorkerRemoveResult(Result):
    removed: bool
    freed_bytes: int


class WorkerExportParams(Params, frozen=True):
    """``iii worker export NAME --to oci:DIR[:TAG] | REF`` (SPEC §14)."""

    name: WorkerName
    to: str


class WorkerExportResult(Result):
    digest: str  # manifest digest of the exported image
    size: int  # compressed bytes of the added layer
    layer_digest: str
    destination: str  # oci:DIR:TAG, or REGISTRY/REPO@DIGEST after a push
    blobs_uploaded: int = 0
    blobs_reused: int = 0  # already in the registry or mounted: never re-uploaded


class WorkerListResult(Result):
    workers: list[Worker]


class WorkerLogsParams(Params, frozen=True):
    name: WorkerName
    tail: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 100
    follow: bool = False


class WorkerLogsResult(Result):
    lines: list[str]


# ---- image.* ----------------------------------------------------------------------------------

class ImagePullParams(Params, frozen=True):
    ref: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    refresh: bool = False
    progress: bool = False


class ImagePullResult(Result):
    ref: str
    digest: str
    slug: str
    path: str
    size_bytes: int


class ImageSummary(Result):
    ref: str
    digest: str
    slug: str
    size_bytes: int


class ImageListResult(Result):
    images: list[ImageSummary]


class NoParams(Params, frozen=True):
    pass


# ---- notifications ----------------------------------------------------------------------------

class ProgressNotification(Result):
    id: Any
    phase: ProgressPhase
    message: str
    current: int | None = None
    total: int | None = None
    unit: str | None = None


class LogNotification(Result):
    name: str
    line: str


class EventNotification(Result):
    worker: str
    status: str
    time: float
    detail: str | None = None


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
    "worker.export": (WorkerExportParams, WorkerExportResult),
    "image.pull": (ImagePullParams, ImagePullResult),
    "image.list": (NoParams, ImageListResult),
    "events.subscribe": (NoParams, EmptyResult),
}
