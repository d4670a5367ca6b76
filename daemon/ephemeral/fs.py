"""The ten ``sandbox::fs::*`` calls. Each one is done inside the sandbox by
``vmm_ffi.exec.sandbox_fs`` (through the exec fork server), so paths resolve in the sandbox's own
root: ``..`` and symlinks cannot leave it. Contents travel inline, capped at ``max_file_bytes``:
larger writes are refused before anything is touched."""

from __future__ import annotations

import base64
from typing import Any

import msgspec

from client.protocol.sandbox import (
    ChmodRequest,
    ChmodResponse,
    GrepRequest,
    GrepResponse,
    LsRequest,
    LsResponse,
    MkdirRequest,
    MkdirResponse,
    MvRequest,
    MvResponse,
    ReadRequest,
    ReadResponse,
    RmRequest,
    RmResponse,
    SedRequest,
    SedResponse,
    StatRequest,
    StatResponse,
    WriteRequest,
    WriteResponse,
)
from daemon.config.sandbox_policy import SandboxPolicy
from daemon.ephemeral.boot import SandboxBooter
from daemon.ephemeral.commands import decode_b64
from daemon.ephemeral.errors import SCode, sandbox_error
from daemon.ephemeral.registry import SandboxTable
from daemon.ephemeral.runner import run_fs
from daemon.workers.commands.exec import ForkServer

__all__ = ["SandboxFiles"]


class SandboxFiles:
    """The fs half of ``SandboxService`` (which provides ``booter``, ``table``, ``server``)."""

    booter: SandboxBooter
    table: SandboxTable
    server: ForkServer

    @property
    def policy(self) -> SandboxPolicy:
        return self.booter.policy

    async def _fs(self, sandbox_id: str, op: dict[str, Any],
                  data: bytes = b"") -> tuple[dict[str, Any], bytes]:
        sandbox = self.table.get(sandbox_id)
        with self.table.exec_slot(sandbox, self.policy.exec_slots):
            return await run_fs(self.server, sandbox, op, data, self.policy.max_file_bytes)

    async def read(self, req: ReadRequest) -> ReadResponse:
        ok, data = await self._fs(req.sandbox_id, {"op": "read", "path": req.path})
        try:
            return ReadResponse(size=ok["size"], mode=ok["mode"], mtime=ok["mtime"],
                                body=data.decode("utf-8"))
        except UnicodeDecodeError:
            return ReadResponse(size=ok["size"], mode=ok["mode"], mtime=ok["mtime"],
                                body_b64=base64.b64encode(data).decode())

    async def write(self, req: WriteRequest) -> WriteResponse:
        if (req.content is None) == (req.content_b64 is None):
            raise sandbox_error(SCode.S210, "pass exactly one of `content` (UTF-8 text) or "
                                "`content_b64` (base64 bytes)")
        data = req.content.encode() if req.content is not None else \
            decode_b64("content_b64", req.content_b64)
        limit = self.policy.max_file_bytes
        if len(data) > limit:
            raise sandbox_error(SCode.S210, f"content is {len(data)} bytes, over the inline "
                                f"limit of {limit} bytes (sandboxes.max_file_bytes); write it "
                                "in parts, or fetch it from inside the sandbox",
                                fix_note="nothing was written")
        ok, _ = await self._fs(req.sandbox_id, {"op": "write", "path": req.path,
                                                "mode": req.mode, "parents": req.parents}, data)
        return msgspec.convert(ok, WriteResponse)

    async def ls(self, req: LsRequest) -> LsResponse:
        ok, _ = await self._fs(req.sandbox_id, {"op": "ls", "path": req.path})
        return msgspec.convert(ok, LsResponse)

    async def stat(self, req: StatRequest) -> StatResponse:
        ok, _ = await self._fs(req.sandbox_id, {"op": "stat", "path": req.path})
        return msgspec.convert(ok, StatResponse)

    async def mkdir(self, req: MkdirRequest) -> MkdirResponse:
        ok, _ = await self._fs(req.sandbox_id, {"op": "mkdir", "path": req.path,
                                                "mode": req.mode, "parents": req.parents})
        return msgspec.convert(ok, MkdirResponse)

    async def rm(self, req: RmRequest) -> RmResponse:
        ok, _ = await self._fs(req.sandbox_id, {"op": "rm", "path": req.path,
                                                "recursive": req.recursive})
        return msgspec.convert(ok, RmResponse)

    async def mv(self, req: MvRequest) -> MvResponse:
        ok, _ = await self._fs(req.sandbox_id, {"op": "mv", "src": req.src, "dst": req.dst,
                                                "overwrite": req.overwrite})
        return msgspec.convert(ok, MvResponse)

    async def chmod(self, req: ChmodRequest) -> ChmodResponse:
        ok, _ = await self._fs(req.sandbox_id, _fields(req))
        return msgspec.convert(ok, ChmodResponse)

    async def grep(self, req: GrepRequest) -> GrepResponse:
        ok, _ = await self._fs(req.sandbox_id, _fields(req))
        return msgspec.convert(ok, GrepResponse)

    async def sed(self, req: SedRequest) -> SedResponse:
        if bool(req.files) == (req.path is not None):
            raise sandbox_error(SCode.S210, "pass exactly one of `files` (a list of paths) or "
                                "`path` (a directory to walk)")
        ok, _ = await self._fs(req.sandbox_id, _fields(req))
        return msgspec.convert(ok, SedResponse)


def _fields(req: msgspec.Struct) -> dict[str, Any]:
    """The request as the fs helper's operation (``op`` = the struct's verb)."""
    fields: dict[str, Any] = msgspec.to_builtins(req)
    fields.pop("sandbox_id", None)
    fields["op"] = type(req).__name__.removesuffix("Request").lower()
    return fields
