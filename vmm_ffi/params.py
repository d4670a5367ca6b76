"""The launcher's versioned handshake: what the daemon asks for, what the launcher answers.

``LaunchParams`` goes to ``python -m vmm_ffi.launcher SPEC.json`` (or on stdin); the launcher
answers with exactly one ``LaunchResult`` JSON line on stdout, and the launcher's parent side
writes ``ExitStatus`` atomically to ``exit_path`` when the sandbox ends.

Exit code convention (``ExitStatus.exit_code`` and the launcher's own exit code): a normal exit
gives the workload's code; a workload killed by signal N gives 128+N (``signal`` = N).
The launcher itself uses 2 for invalid params, 75 when another launcher already runs this
sandbox (its state directory is locked; nothing is touched), 125 when the sandbox could not be
set up;
127/126 mean the command was not found / not executable inside the sandbox.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

PROTOCOL_VERSION = 1

# "host" runs a Binary worker (SPEC §5) as a plain host process: no namespaces, no root of its
# own, but the same launcher process model (detached, signals forwarded, exit.json, reattach).
Backend = Literal["libkrun", "namespace", "host"]

# Exit codes of the launcher that are not the workload's own.
EXIT_INVALID_PARAMS = 2
EXIT_ALREADY_RUNNING = 75  # sysexits EX_TEMPFAIL: another launcher holds the state dir
EXIT_SETUP_FAILED = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
AbsPath = Annotated[str, msgspec.Meta(pattern=r"^/")]


class OverlayRoot(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                  tag="overlay", tag_field="kind"):
    """Root made by overlayfs: read-only image dirs below, the sandbox's own upper/work above.

    ``lower`` is ordered top-most first (overlayfs ``lowerdir`` order).
    """

    lower: Annotated[list[AbsPath], msgspec.Meta(min_length=1)]
    upper: AbsPath
    work: AbsPath


class DirectoryRoot(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                    tag="directory", tag_field="kind"):
    """Root that is a plain directory (the reflink/full-copy fallback); bind-mounted at merged."""

    path: AbsPath


RootSpec = OverlayRoot | DirectoryRoot


class BindMount(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A host file or directory made visible at ``target`` (an in-sandbox absolute path)."""

    source: AbsPath
    target: AbsPath
    readonly: bool = True


class IdShift(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Sandbox ids 0..65535 run as host ids ``uid_base..`` / ``gid_base..`` (a root launcher).

    The root and the sandbox's state dir are shown through idmapped mounts, so files keep
    their sandbox owners on disk (0..65535) while no sandbox process is host root.
    """

    uid_base: Annotated[int, msgspec.Meta(ge=1, le=(1 << 32) - 65536)]
    gid_base: Annotated[int, msgspec.Meta(ge=1, le=(1 << 32) - 65536)]


PolicyMode = Literal["none", "engine", "egress"]
NetworkMode = Literal["host", "none", "pasta", "slirp4netns", "bridge"]


class BridgeParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A root daemon's bridge (``vmm_ffi.network.bridge``): its state dir (``<home>/network``:
    leases, lock), the tag naming its bridge/veths/table, and the configured subnet (None:
    chosen)."""

    state_dir: AbsPath
    tag: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{6}$")]
    subnet: str | None = None


class NetworkPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an own-netns sandbox may reach (``vmm_ffi.network.policy``): ``mode``, the engine's
    host loopback port (shown at the sandbox's ``127.0.0.1``), ``allow`` / ``deny`` entries
    (``<IP or CIDR>[:<port>[-<port>]]``) and ``auto_allow`` (the daemon's proxy, registry
    mirror, a remote engine: allowed under every mode but ``none``, deny notwithstanding)."""

    mode: PolicyMode = "egress"
    engine_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    allow: list[str] = []
    deny: list[str] = []
    auto_allow: list[str] = []


class RunAs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The sandbox user the workload runs as (an image's ``USER``, resolved by the daemon
    against the image's /etc/passwd and /etc/group); None in ``LaunchParams`` = sandbox root."""

    uid: Annotated[int, msgspec.Meta(ge=0, le=65535)]
    gid: Annotated[int, msgspec.Meta(ge=0, le=65535)]
    groups: list[Annotated[int, msgspec.Meta(ge=0, le=65535)]] = []


class LaunchParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything one launcher needs to become one sandbox.

    ``env`` is exactly the workload's environment: nothing of the launcher's own leaks in.
    ``merged`` is the host directory where the root is mounted (created by the daemon).
    ``network`` (namespace backend): ``pasta`` = an own network namespace connected by pasta
    (``vmm_ffi.network.helper``; ``pasta`` names its binary), ``slirp4netns`` = the same
    connected by slirp4netns (``slirp4netns`` names its binary), ``bridge`` = the same on a root
    daemon's bridge (``bridge`` says which; no helper process), ``none`` = an own namespace with
    loopback only (no helper), ``host`` = the host's. ``policy`` says what an own namespace reaches.
    ``cgroup``: a delegated cgroup v2 directory to create the sandbox's cgroup under; ``None``
    lets the launcher use its own cgroup when that is v2 and writable (cgroup v1: a root launcher
    makes its own leaves). ``pids_max`` caps the sandbox's processes + threads. When limits cannot be
    enforced the launcher says why (``LaunchResult.limits``, and in the log).
    """

    version: int = PROTOCOL_VERSION
    name: NonEmpty
    backend: Backend
    rootfs: RootSpec
    merged: AbsPath
    argv: Annotated[list[str], msgspec.Meta(min_length=1)]
    env: dict[str, str] = {}
    workdir: AbsPath = "/"
    cpus: Annotated[int, msgspec.Meta(ge=1, le=255)] = 1
    memory_mib: Annotated[int, msgspec.Meta(ge=16, le=1 << 20)] = 512
    log_path: AbsPath
    exit_path: AbsPath
    hostname: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "sandbox"
    binds: list[BindMount] = []
    cgroup: AbsPath | None = None
    network: NetworkMode = "host"
    policy: NetworkPolicy = NetworkPolicy()
    bridge: BridgeParams | None = None
    pasta: AbsPath | None = None
    slirp4netns: AbsPath | None = None
    id_shift: IdShift | None = None
    # no_new_privs + the seccomp filter (namespace backend). False only to test the error path
    # and to measure the filter's cost: a missing libseccomp otherwise fails the launch.
    seccomp: bool = True
    pids_max: Annotated[int, msgspec.Meta(ge=16, le=1 << 22)] = 4096
    user: RunAs | None = None  # namespace backend: the workload's uid/gid/groups (USER)


class LaunchResult(msgspec.Struct, frozen=True, kw_only=True):
    """The launcher's one-line answer, printed once the sandbox is set up (before the exec).

    ``pid`` is the launcher (signal it: SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 are
    forwarded to the workload). ``sandbox_pid`` is the host pid of the sandbox's init (namespace)
    or VMM process (libkrun): SIGKILL it to kill the whole sandbox while the launcher still
    records ``exit.json`` (SIGKILL of ``pid`` kills everything too, but records nothing).
    ``limits`` is "enforced" or "not enforced: <reason>". ``network``: what the sandbox got
    (``tsi`` = libkrun's own transparent socket impersonation). ``seccomp`` names the filter
    every sandbox process runs under (``iii-default/1``), ``None`` when there is none (libkrun,
    host, or disabled by the params); older launchers omit it.
    """

    version: int
    pid: int
    backend: Backend
    sandbox_pid: int
    started_at: float
    root_mode: Literal["overlay", "directory"]
    limits: str
    network: Literal["host", "none", "pasta", "slirp4netns", "bridge", "tsi"] = "host"
    policy: str = ""  # the network policy in force, one line (network.policy.describe)
    id_map: str = ""  # "0-65535 -> 100000-165535": sandbox ids -> host ids
    seccomp: str | None = None


class ExitStatus(msgspec.Struct, frozen=True, kw_only=True):
    """How the sandbox ended; written atomically to ``exit_path`` by the launcher."""

    version: int = PROTOCOL_VERSION
    exit_code: int
    signal: int | None = None
    finished_at: float
    error: str | None = None


def encode(obj: msgspec.Struct) -> bytes:
    """JSON encoding used on every launcher channel."""
    return msgspec.json.encode(obj)


def decode_params(data: bytes | str) -> LaunchParams:
    """Decode and validate params; raises ``msgspec.ValidationError``/``DecodeError``."""
    params = msgspec.json.decode(data, type=LaunchParams)
    if params.version != PROTOCOL_VERSION:
        raise msgspec.ValidationError(
            f"unsupported params version {params.version} (this launcher speaks "
            f"{PROTOCOL_VERSION}) - `$.version`")
    return params


def decode_result(line: bytes | str) -> LaunchResult:
    """Decode the launcher's one ``LaunchResult`` line."""
    return msgspec.json.decode(line, type=LaunchResult)


def read_exit_status(data: bytes | str) -> ExitStatus:
    """Decode an ``exit.json``."""
    return msgspec.json.decode(data, type=ExitStatus)
