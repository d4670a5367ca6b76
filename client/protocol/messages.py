"""Wire types of the daemon's socket protocol: the ``daemon.*``, ``worker.*`` and ``image.*``
methods' params and results, and the notifications.

Framing: one JSON-RPC 2.0 object per line (UTF-8, ``\\n``), at most ``MAX_LINE_BYTES`` per line.
Params structs forbid unknown fields (the daemon answers -32602); result and notification
structs accept unknown fields so an older client keeps working when the daemon adds one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from client.protocol.base import Params, Result

WorkerName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
WorkerType = Literal["local", "oci", "binary", "config"]
WorkerStatus = Literal[
    "stopped", "preparing", "installing", "starting", "running", "stopping", "crashed", "backoff"
]
Isolation = Literal["libkrun", "namespace"]
# "layer" (building the exported layer) and "push" (blobs to a registry): worker.export only.
ProgressPhase = Literal["pull", "extract", "provision", "copy", "setup", "install", "start",
                        "layer", "push"]


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
    last_error: str | None = None
    started_at: float | None = None
    deps_installed: bool = False
    image: str | None = None
    resources: Resources | None = None
    # worker.start / worker.restart: what the start had to say (e.g. no hardware isolation)
    warnings: list[str] = msgspec.field(default_factory=list)


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


class SandboxIsolation(Result):
    """What the running sandbox got (from its launcher): ``network`` pasta | host | tsi,
    ``id_map`` "0-65535 -> 100000-165535", ``limits`` "enforced" | "not enforced: <why>"."""

    backend: str
    network: str
    id_map: str
    limits: str
    no_new_privs: bool | None = None
    seccomp: str | None = None


class WorkerInspectResult(Worker):
    manifest: ManifestView | None = None
    warnings: list[str] = msgspec.field(default_factory=list)
    paths: WorkerPaths | None = None
    isolation_detail: SandboxIsolation | None = None  # None while no sandbox runs


class BackendAvailability(Result):
    available: bool
    reason: str | None = None


class HostIsolation(Result):
    """What this host gives namespace sandboxes: own network, shifted ids, enforced limits."""

    network: str
    ids: str
    cgroups: str


class IsolationInfo(Result):
    default: str
    backends: dict[str, BackendAvailability]
    host: HostIsolation | None = None


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
    watch: bool = True  # local workers: hot reload (False writes `watch: false` to the entry)


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
    # None: the daemon's stop_timeout_s (daemon.yaml, default 10)
    timeout_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] | None = None


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
    progress: bool = False


class WorkerExportResult(Result):
    digest: str  # manifest digest of the exported image
    size: int  # compressed bytes of the added layer
    layer_digest: str
    destination: str  # oci:DIR:TAG, or REGISTRY/REPO@DIGEST after a push
    blobs_uploaded: int = 0
    blobs_reused: int = 0  # already in the registry or mounted: never re-uploaded


class WorkerKubernetesParams(Params, frozen=True):
    """``iii worker export NAME --kubernetes``: YAML for an exported image (SPEC §14).
    ``image`` defaults to the worker's last pushed export; ``engine_url`` to the daemon's."""

    name: WorkerName
    image: str | None = None
    namespace: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")] = \
        "default"
    engine_url: str | None = None
    runtime_class: str | None = None
    replicas: Annotated[int, msgspec.Meta(ge=0, le=10000)] = 1


class WorkerKubernetesResult(Result):
    yaml: str
    image: str


class WorkerListResult(Result, omit_defaults=True):
    workers: list[Worker]
    #: Seconds since the engine last answered ``engine::workers::list`` (what every
    #: ``engine_registered`` is based on); left out while the engine cannot be asked.
    engine_age_s: float | None = None
    # Set while config.yaml is broken: ``workers`` is then the last good state, not the file.
    config_error: str | None = None


class WorkerLogsParams(Params, frozen=True):
    name: WorkerName
    tail: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 100
    follow: bool = False


class WorkerLogsResult(Result):
    lines: list[str]


class WorkerExecParams(Params, frozen=True):
    """Run ``argv`` in the running sandbox. The request carries the command's stdin, stdout and
    stderr as three file descriptors (SCM_RIGHTS) and must be the first line on its connection;
    with ``tty`` they are the client's pty slave. ``exec_id`` names it for ``worker.exec_signal``."""

    name: WorkerName
    argv: Annotated[list[str], msgspec.Meta(min_length=1)]
    env: dict[str, str] = msgspec.field(default_factory=dict)
    workdir: str | None = None
    tty: bool = False
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] | None = None
    exec_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class WorkerExecResult(Result):
    exit_code: int
    timed_out: bool = False


class SandboxExecStdioParams(Params, frozen=True):
    """``sandbox.exec_stdio`` (``iii sandbox exec``): as ``worker.exec``, in an ephemeral
    sandbox (``client/protocol/sandbox.py``); its signals go through ``sandbox.exec_signal``."""

    sandbox_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    argv: Annotated[list[str], msgspec.Meta(min_length=1)]
    env: dict[str, str] = msgspec.field(default_factory=dict)
    workdir: str | None = None
    tty: bool = False
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] | None = None
    exec_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class WorkerExecSignalParams(Params, frozen=True):
    exec_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    signal: Annotated[int, msgspec.Meta(ge=1, le=64)]


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


# ---- the management API on the engine bus (SPEC §10) ------------------------------------------
# The daemon serves these iii functions over its engine session with the socket methods' own
# Params/Result types (no second schema); the mutating ones only with ``engine_control: true``.

class WorkerValidateParams(Params, frozen=True):
    """``worker::validate``: the result is ``iii worker validate --json``'s document."""

    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class LifecycleTriggerConfig(Params, frozen=True):
    """Config of a ``worker::lifecycle`` trigger: which events reach its function (each an
    :class:`EventNotification`); an absent filter matches everything."""

    statuses: list[str] | None = None
    worker: WorkerName | None = None
