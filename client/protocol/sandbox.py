"""Wire types of the ephemeral sandbox service: upstream iii's ``sandbox::*`` functions
(``crates/iii-worker/src/sandbox_daemon/``), the same on the engine bus and on the socket.

Field names, defaults and shapes are upstream's Rust request/response structs
(``tests/daemon/ephemeral/upstream_sandbox_contract.json`` writes them down and a test compares). Where we
differ it is said on the field:

- ``sandbox::fs::read`` cannot hand out an engine stream channel (``content:
  StreamChannelRef``): the bytes come inline, as ``body`` (UTF-8 text) or ``body_b64`` (binary),
  up to ``max_file_bytes``; ``sandbox::fs::write`` takes ``content`` (text) or ``content_b64``.
- ``ExecResponse`` adds ``stdout_truncated`` / ``stderr_truncated`` (each stream is capped at
  ``max_output_bytes``, upstream's 1 MiB by default, as upstream does silently).
- ``CreateRequest`` / ``RunRequest`` take ``network`` (default false: loopback only).

Errors are not here: on the engine bus ``error.message`` is the JSON of
``SandboxErrorPayload``; on the socket the JSON-RPC error's ``data`` is that payload.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from client.protocol.base import Params, Result

__all__ = [
    "SANDBOX_FUNCTIONS", "SANDBOX_METHODS", "CatalogEntry", "CatalogListResponse",
    "ChmodRequest", "ChmodResponse", "CreateRequest", "CreateResponse", "EnvShape",
    "ExecRequest", "ExecResponse", "FsEntry", "FsMatch", "FsSedFileResult", "GrepRequest",
    "GrepResponse", "ListResponse", "LsRequest", "LsResponse", "MkdirRequest", "MkdirResponse",
    "MvRequest", "MvResponse", "ReadRequest", "ReadResponse", "RmRequest", "RmResponse",
    "RunFile", "RunRequest", "RunResponse", "SandboxErrorPayload", "SandboxSummary",
    "SedRequest", "SedResponse", "StatRequest", "StatResponse", "StopRequest", "StopResponse",
    "WriteRequest", "WriteResponse",
]

#: ``["K=V", ...]`` (upstream's wire shape) or ``{"K": "V"}`` (the agent-natural one).
EnvShape = list[str] | dict[str, str]
SandboxId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Path = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
Mode = Annotated[str, msgspec.Meta(pattern=r"^0?[0-7]{3,4}$")]


class SandboxErrorPayload(Result):
    """Upstream's ``SandboxError::to_payload``: what a caller parses out of ``error.message``."""

    type: str
    code: str
    message: str
    docs_url: str
    retryable: bool
    fix: dict[str, object] | None = None
    fix_note: str | None = None


# ---- lifecycle ---------------------------------------------------------------------------------

class CreateRequest(Params, frozen=True):
    image: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    cpus: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    memory_mb: Annotated[int, msgspec.Meta(ge=16, le=65536)] | None = None
    name: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    network: bool | None = None
    idle_timeout_secs: Annotated[int, msgspec.Meta(ge=1)] | None = None
    env: EnvShape = msgspec.field(default_factory=list)


class CreateResponse(Result):
    sandbox_id: str
    image: str


class ExecRequest(Params, frozen=True):
    sandbox_id: SandboxId
    cmd: str = ""
    args: list[str] = msgspec.field(default_factory=list)
    argv: list[str] = msgspec.field(default_factory=list)
    stdin: str | None = None  # base64
    env: EnvShape = msgspec.field(default_factory=list)
    timeout_ms: Annotated[int, msgspec.Meta(ge=1)] | None = None
    workdir: str | None = None


class ExecResponse(Result):
    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool
    duration_ms: int
    success: bool
    stdout_truncated: bool = False  # ours: the stream passed max_output_bytes
    stderr_truncated: bool = False


class NoRequest(Params, frozen=True):
    """``sandbox::list`` / ``sandbox::catalog::list``: an empty payload."""


class SandboxSummary(Result):
    sandbox_id: str
    name: str | None
    image: str
    age_secs: int
    exec_in_progress: bool
    exec_in_flight: int
    exec_slots_free: int
    stopped: bool


class ListResponse(Result):
    sandboxes: list[SandboxSummary]


class StopRequest(Params, frozen=True):
    sandbox_id: SandboxId
    wait: bool = False


class StopResponse(Result):
    sandbox_id: str
    stopped: bool


class RunFile(Params, frozen=True):
    path: Path
    content: str


class RunRequest(Params, frozen=True):
    image: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    code: str
    lang: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    files: list[RunFile] = msgspec.field(default_factory=list)
    env: EnvShape = msgspec.field(default_factory=list)
    stdin: str | None = None  # base64
    timeout_ms: Annotated[int, msgspec.Meta(ge=1)] | None = None
    keep_sandbox: bool = False
    network: bool | None = None  # ours: as CreateRequest.network


class RunResponse(Result, omit_defaults=True):
    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool
    duration_ms: int
    success: bool
    sandbox_id: str | None = None  # only with keep_sandbox
    stdout_truncated: bool = False
    stderr_truncated: bool = False


class CatalogEntry(Result):
    name: str
    oci_ref: str
    kind: Literal["preset", "custom"]


class CatalogListResponse(Result):
    images: list[CatalogEntry]


# ---- filesystem --------------------------------------------------------------------------------

class FsEntry(Result):
    name: str
    is_dir: bool
    size: int
    mode: str
    mtime: int
    is_symlink: bool


class FsMatch(Result):
    path: str
    line: int
    content: str


class FsSedFileResult(Result, omit_defaults=True):
    path: str
    replacements: int
    success: bool
    error: str | None = None


class ReadRequest(Params, frozen=True):
    sandbox_id: SandboxId
    path: Path


class ReadResponse(Result, omit_defaults=True):
    size: int
    mode: str
    mtime: int
    body: str | None = None  # UTF-8 text
    body_b64: str | None = None  # ours: anything else, base64 (upstream: a stream channel)


class WriteRequest(Params, frozen=True):
    sandbox_id: SandboxId
    path: Path
    mode: Mode = "0644"
    parents: bool = False
    content: str | None = None
    content_b64: str | None = None


class WriteResponse(Result):
    bytes_written: int
    path: str


class LsRequest(Params, frozen=True):
    sandbox_id: SandboxId
    path: Path


class LsResponse(Result):
    entries: list[FsEntry]


class StatRequest(Params, frozen=True):
    sandbox_id: SandboxId
    path: Path


class StatResponse(FsEntry):
    pass


class MkdirRequest(Params, frozen=True):
    sandbox_id: SandboxId
    path: Path
    mode: Mode = "0755"
    parents: bool = False


class MkdirResponse(Result):
    created: bool


class RmRequest(Params, frozen=True):
    sandbox_id: SandboxId
    path: Path
    recursive: bool = False


class RmResponse(Result):
    removed: bool


class MvRequest(Params, frozen=True):
    sandbox_id: SandboxId
    src: Path
    dst: Path
    overwrite: bool = False


class MvResponse(Result):
    moved: bool


class ChmodRequest(Params, frozen=True):
    sandbox_id: SandboxId
    path: Path
    mode: Mode
    uid: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    gid: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    recursive: bool = False


class ChmodResponse(Result):
    updated: int


class GrepRequest(Params, frozen=True):
    sandbox_id: SandboxId
    path: Path
    pattern: str
    recursive: bool = True
    ignore_case: bool = False
    include_glob: list[str] = msgspec.field(default_factory=list)
    exclude_glob: list[str] = msgspec.field(default_factory=list)
    max_matches: Annotated[int, msgspec.Meta(ge=1)] = 10000
    max_line_bytes: Annotated[int, msgspec.Meta(ge=1)] = 4096


class GrepResponse(Result):
    matches: list[FsMatch]
    truncated: bool


class SedRequest(Params, frozen=True):
    sandbox_id: SandboxId
    pattern: str
    replacement: str
    files: list[str] = msgspec.field(default_factory=list)
    path: str | None = None
    recursive: bool = True
    include_glob: list[str] = msgspec.field(default_factory=list)
    exclude_glob: list[str] = msgspec.field(default_factory=list)
    regex: bool = True
    first_only: bool = False
    ignore_case: bool = False


class SedResponse(Result):
    results: list[FsSedFileResult]
    total_replacements: int


# socket method → (request, response); the iii function of each is SANDBOX_FUNCTIONS' key
SANDBOX_METHODS: dict[str, tuple[type[Params], type[Result]]] = {
    "sandbox.run": (RunRequest, RunResponse),
    "sandbox.create": (CreateRequest, CreateResponse),
    "sandbox.exec": (ExecRequest, ExecResponse),
    "sandbox.list": (NoRequest, ListResponse),
    "sandbox.stop": (StopRequest, StopResponse),
    "sandbox.catalog.list": (NoRequest, CatalogListResponse),
    "sandbox.fs.read": (ReadRequest, ReadResponse),
    "sandbox.fs.write": (WriteRequest, WriteResponse),
    "sandbox.fs.ls": (LsRequest, LsResponse),
    "sandbox.fs.stat": (StatRequest, StatResponse),
    "sandbox.fs.mkdir": (MkdirRequest, MkdirResponse),
    "sandbox.fs.rm": (RmRequest, RmResponse),
    "sandbox.fs.mv": (MvRequest, MvResponse),
    "sandbox.fs.chmod": (ChmodRequest, ChmodResponse),
    "sandbox.fs.grep": (GrepRequest, GrepResponse),
    "sandbox.fs.sed": (SedRequest, SedResponse),
}

#: upstream's iii function id → our socket method (``sandbox::fs::read`` → ``sandbox.fs.read``)
SANDBOX_FUNCTIONS: dict[str, str] = {
    method.replace(".", "::"): method for method in SANDBOX_METHODS
}
