"""The ``sandbox::*`` lifecycle calls (create, exec, run, list, stop, catalog::list): one plain
async method each, taking and returning the ``client.protocol.sandbox`` structs. The socket's
dispatcher and the engine bus (``daemon.ephemeral.engine``) both call these; the fs calls are in
``daemon.ephemeral.fs`` on the same object."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid

import msgspec

from client.protocol.messages import (
    EmptyResult,
    SandboxExecStdioParams,
    WorkerExecParams,
    WorkerExecResult,
    WorkerExecSignalParams,
)
from client.protocol.sandbox import (
    CatalogListResponse,
    CreateRequest,
    CreateResponse,
    ExecRequest,
    ExecResponse,
    ListResponse,
    RunRequest,
    RunResponse,
    StopRequest,
    StopResponse,
    WriteRequest,
)
from daemon.ephemeral.boot import SandboxBooter
from daemon.ephemeral.catalog import catalog_list, resolve_image
from daemon.ephemeral.commands import decode_b64, interpreter_for, resolve_argv, resolve_env
from daemon.ephemeral.errors import SandboxError, SCode, sandbox_error
from daemon.ephemeral.fs import SandboxFiles
from daemon.ephemeral.pool import WarmPool
from daemon.ephemeral.registry import Sandbox, SandboxTable
from daemon.ephemeral.runner import exec_spec, run_command
from daemon.notify import Notify
from daemon.workers.commands.exec import ExecRegistry, run_exec

__all__ = ["SandboxService"]

log = logging.getLogger("iii.daemon.sandboxes")


class SandboxService(SandboxFiles):
    """Owns every ephemeral sandbox of the daemon (see ``daemon/ephemeral/__init__.py``)."""

    def __init__(self, booter: SandboxBooter) -> None:
        self.booter = booter
        self.table = SandboxTable()
        self.execs = ExecRegistry()  # its fork server serves every exec and fs call here
        self.server = self.execs.server
        self.pool = WarmPool(booter)
        self._teardowns: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def create(self, req: CreateRequest) -> CreateResponse:
        sandbox = await self._create(req)
        return CreateResponse(sandbox_id=sandbox.id, image=sandbox.image)

    async def _create(self, req: CreateRequest) -> Sandbox:
        policy = self.policy
        oci_ref = resolve_image(policy, req.image)
        env = resolve_env(req.env)
        cpus = req.cpus or policy.default_cpus
        memory = req.memory_mb or policy.default_memory_mb
        network = bool(req.network)
        with self.table.reserve(policy.max_concurrent_sandboxes):
            self.pool.note_use(req.image)
            sandbox = None
            if (cpus, memory, network) == (policy.default_cpus, policy.default_memory_mb, False):
                sandbox = self.pool.claim(req.image)
            if sandbox is None:
                sandbox = await self._boot(req.image, oci_ref, cpus, memory, network)
        sandbox.env.update(env)
        sandbox.name = req.name
        sandbox.idle_timeout_s = float(req.idle_timeout_secs or policy.default_idle_timeout_secs)
        sandbox.touch()
        self.table.add(sandbox)
        return sandbox

    async def _boot(self, image: str, oci_ref: str, cpus: int, memory: int,
                    network: bool) -> Sandbox:
        cached = await self.booter.image(oci_ref)
        sandbox_id = str(uuid.uuid4())
        booted = await self.booter.boot(sandbox_id, cached, cpus=cpus, memory_mb=memory,
                                        network=network)
        return Sandbox.from_booted(booted, id=sandbox_id, image=image, oci_ref=oci_ref,
                                   cpus=cpus, memory_mb=memory, network=network)

    def _timeout_s(self, timeout_ms: int | None) -> float:
        limit = self.policy.max_exec_timeout_ms
        return min(timeout_ms or limit, limit) / 1000.0

    async def exec(self, req: ExecRequest) -> ExecResponse:
        argv = resolve_argv(req.cmd, req.args, req.argv)
        env = resolve_env(req.env)
        stdin = decode_b64("stdin", req.stdin)
        sandbox = self.table.get(req.sandbox_id)
        return await self._exec(sandbox, argv, env, stdin, req.workdir, req.timeout_ms)

    async def _exec(self, sandbox: Sandbox, argv: list[str], env: dict[str, str],
                    stdin: bytes, workdir: str | None, timeout_ms: int | None) -> ExecResponse:
        timeout_s = self._timeout_s(timeout_ms)
        with self.table.exec_slot(sandbox, self.policy.exec_slots):
            outcome = await run_command(self.server, exec_spec(sandbox, argv, env, workdir),
                                        stdin, timeout_s=timeout_s,
                                        max_output=self.policy.max_output_bytes)
        if outcome.timed_out:
            raise sandbox_error(SCode.S200, f"exec timed out after {int(timeout_s * 1000)} ms")
        if outcome.exit_code == 125 and outcome.stderr.startswith(b"error: cannot enter"):
            raise sandbox_error(SCode.S004, f"sandbox already stopped: {sandbox.id} "
                                f"({outcome.stderr.decode(errors='replace').strip()})")
        return ExecResponse(stdout=outcome.stdout.decode(errors="replace"),
                            stderr=outcome.stderr.decode(errors="replace"),
                            exit_code=outcome.exit_code, timed_out=False,
                            duration_ms=outcome.duration_ms, success=outcome.exit_code == 0,
                            stdout_truncated=outcome.stdout_truncated,
                            stderr_truncated=outcome.stderr_truncated)

    async def run(self, req: RunRequest) -> RunResponse:
        """create → write ``/tmp/run.<ext>`` (+ files) → exec the interpreter → stop."""
        interpreter, ext = interpreter_for(req.lang)
        env = resolve_env(req.env)
        stdin = decode_b64("stdin", req.stdin)
        started = time.monotonic()
        sandbox = await self._create(CreateRequest(image=req.image, network=req.network))
        step = "fs::write"
        try:
            script = f"/tmp/run.{ext}"
            for extra in [*req.files, None]:
                path, content = (script, req.code) if extra is None else (extra.path,
                                                                         extra.content)
                await self.write(WriteRequest(sandbox_id=sandbox.id, path=path, parents=True,
                                              content=content))
            step = "exec"
            out = await self._exec(sandbox, [interpreter, script], env, stdin, None,
                                   req.timeout_ms)
        except SandboxError as exc:
            if not req.keep_sandbox:
                self._teardown(sandbox)
            raise sandbox_error(exc.code, f"during sandbox::run step `{step}` (sandbox_id="
                                f"{sandbox.id}): {exc.message}",
                                fix={"context": f"during sandbox::run step `{step}`",
                                     "sandbox_id": sandbox.id, "inner_code": exc.code.name},
                                fix_note=exc.fix_note) from exc
        except BaseException:
            self._teardown(sandbox)
            raise
        if not req.keep_sandbox:
            self._teardown(sandbox)
        return RunResponse(stdout=out.stdout, stderr=out.stderr, exit_code=out.exit_code,
                           timed_out=False, success=out.success,
                           duration_ms=int((time.monotonic() - started) * 1000),
                           sandbox_id=sandbox.id if req.keep_sandbox else None,
                           stdout_truncated=out.stdout_truncated,
                           stderr_truncated=out.stderr_truncated)

    async def exec_stdio(self, req: SandboxExecStdioParams, notify: Notify) -> WorkerExecResult:
        """``iii sandbox exec``: the command on the client's own fds (a pty on a terminal), as
        ``worker.exec`` does for workers; it holds one of the sandbox's exec slots."""
        fds = notify.take_fds()
        try:
            env = resolve_env(req.env)
            sandbox = self.table.get(req.sandbox_id)
            spec = exec_spec(sandbox, list(req.argv), env, req.workdir)
            spec = msgspec.structs.replace(spec, tty=req.tty)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        params = WorkerExecParams(name="sandbox", argv=list(req.argv), timeout_s=req.timeout_s,
                                  exec_id=req.exec_id)
        with self.table.exec_slot(sandbox, self.policy.exec_slots):
            return await run_exec(spec, fds, params, self.execs)

    async def exec_signal(self, req: WorkerExecSignalParams) -> EmptyResult:
        self.execs.signal(req.exec_id, req.signal)
        return EmptyResult()

    async def list_sandboxes(self) -> ListResponse:
        now, slots = time.monotonic(), self.policy.exec_slots
        return ListResponse(sandboxes=[s.summary(slots, now) for s in self.table.all()])

    async def catalog(self) -> CatalogListResponse:
        return catalog_list(self.policy)

    async def stop(self, req: StopRequest) -> StopResponse:
        sandbox = self.table.get(req.sandbox_id)
        task = self._teardown(sandbox)
        if req.wait:
            await asyncio.shield(task)
        return StopResponse(sandbox_id=sandbox.id, stopped=True)

    def _teardown(self, sandbox: Sandbox) -> asyncio.Task[None]:
        """Forget the sandbox now, destroy it in the background (owned here, awaited on close:
        ``sandbox::run`` answers without waiting for the teardown)."""
        sandbox.stopped = True
        self.table.pop(sandbox.id)
        task = asyncio.get_running_loop().create_task(
            self.booter.destroy(sandbox.layout, sandbox.task), name=f"sandbox-stop-{sandbox.id}")
        self._teardowns.add(task)
        task.add_done_callback(self._teardown_done)
        return task

    def _teardown_done(self, task: asyncio.Task[None]) -> None:
        self._teardowns.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sandbox teardown failed", exc_info=task.exception())

    # -- the daemon's side -------------------------------------------------------------------

    async def reap_idle(self) -> list[str]:
        """Stop every sandbox idle past its timeout; returns their ids."""
        now, max_exec = time.monotonic(), self.policy.max_exec_timeout_ms / 1000.0
        doomed = [s for s in self.table.all() if s.idle_expired(now, max_exec)]
        for sandbox in doomed:
            log.info("sandbox %s idle for %.0f s: stopping it", sandbox.id,
                     now - sandbox.last_active)
            self._teardown(sandbox)
        return [s.id for s in doomed]

    async def aclose(self) -> None:
        """Daemon shutdown: every sandbox (and the warm pool) is stopped and deleted."""
        for sandbox in self.table.all():
            self._teardown(sandbox)
        await self.pool.aclose()
        if self._teardowns:
            await asyncio.gather(*self._teardowns, return_exceptions=True)
        await self.execs.aclose()
        await asyncio.to_thread(self.booter.close)
