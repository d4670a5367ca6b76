"""Running one command (``sandbox::exec``) or one fs operation (``sandbox::fs::*``) in a live
sandbox through the daemon's exec fork server (``vmm_ffi.exec.enter_server``), on pipes the daemon
reads: stdin fed from the request, stdout and stderr each kept up to a cap (the rest is read
and dropped, so the command never blocks on a full pipe), a deadline with SIGTERM then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from daemon.ephemeral.errors import SCode, sandbox_error
from daemon.ephemeral.registry import Sandbox
from daemon.workers.commands.exec import ForkServer, stop_helper
from vmm_ffi.exec.enter import EnterSpec

__all__ = ["Outcome", "run_command", "run_fs"]

KILL_GRACE_S = 0.2  # a timed-out command: SIGTERM, then SIGKILL after this
DRAIN_AFTER_EXIT_S = 0.25  # output still arriving after the command ended (a child kept it)
_READ_CHUNK = 1 << 16
EXIT_SETUP_FAILED = 125  # vmm_ffi.exec.enter: the helper could not enter the sandbox


@dataclass
class Outcome:
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    duration_ms: int


class _Sink:
    """Reads one pipe to EOF on the event loop, keeping at most ``cap`` bytes."""

    def __init__(self, fd: int, cap: int) -> None:
        self.fd, self.cap = fd, cap
        self.data = bytearray()
        self.truncated = False
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        os.set_blocking(fd, False)
        self.loop.add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        if len(chunk) > max(room, 0):
            self.truncated = True

    def close(self) -> None:
        if not self.done.done():
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.done.set_result(None)


async def _feed(fd: int, data: bytes) -> None:
    """Write ``data`` to the command's stdin, then close it (EOF); a command that does not read
    its stdin simply never gets it."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    view = memoryview(data)
    try:
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_writer(fd, ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_writer(fd)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        os.close(fd)


async def run_command(server: ForkServer, spec: EnterSpec, stdin: bytes, *,
                      timeout_s: float, max_output: int) -> Outcome:
    """Run ``spec`` and collect its output. ``timed_out`` after ``timeout_s`` (killed)."""
    started = time.monotonic()
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        helper = await server.spawn(spec, [in_r, out_w, err_w])
    except BaseException:
        for fd in (in_w, out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    out, err = _Sink(out_r, max_output), _Sink(err_r, max_output)
    feeder = asyncio.ensure_future(_feed(in_w, stdin))
    timed_out, code = False, None
    try:
        try:
            code = await asyncio.wait_for(asyncio.shield(helper.exited), timeout_s)
        except TimeoutError:
            timed_out = True
            await stop_helper(helper, KILL_GRACE_S)
        except BaseException:
            await stop_helper(helper, KILL_GRACE_S)
            raise
        await asyncio.wait([out.done, err.done], timeout=DRAIN_AFTER_EXIT_S)
    finally:
        out.close()
        err.close()
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        server.forget(helper)
    exit_code = None if timed_out or code is None else (128 - code if code < 0 else code)
    return Outcome(exit_code=exit_code, stdout=bytes(out.data), stderr=bytes(err.data),
                   stdout_truncated=out.truncated, stderr_truncated=err.truncated,
                   timed_out=timed_out, duration_ms=int((time.monotonic() - started) * 1000))


def exec_spec(sandbox: Sandbox, argv: list[str], env: dict[str, str],
              workdir: str | None) -> EnterSpec:
    return EnterSpec(sandbox_pid=sandbox.sandbox_pid, argv=argv, env={**sandbox.env, **env},
                     workdir=workdir or sandbox.workdir, seccomp=sandbox.seccomp)


async def run_fs(server: ForkServer, sandbox: Sandbox, op: dict[str, Any], data: bytes,
                 max_bytes: int) -> tuple[dict[str, Any], bytes]:
    """One ``vmm_ffi.exec.sandbox_fs`` operation in the sandbox: (its answer's ``ok`` object, the
    bytes after the answer line). Failures are raised as the matching S-code."""
    spec = EnterSpec(sandbox_pid=sandbox.sandbox_pid, argv=["sandbox-fs"], env={}, workdir="/",
                     seccomp=sandbox.seccomp, fs={**op, "max_bytes": max_bytes})
    outcome = await run_command(server, spec, data, timeout_s=60.0,
                                max_output=max_bytes + (1 << 20))
    line, _, rest = outcome.stdout.partition(b"\n")
    try:
        answer = json.loads(line)
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not ("ok" in answer or "error" in answer):
        tail = outcome.stderr.decode(errors="replace").strip()[-300:]
        raise sandbox_error(SCode.S216, f"fs i/o error: the fs helper gave no answer (exit "
                            f"{outcome.exit_code}){': ' + tail if tail else ''}")
    if "error" in answer:
        raise fs_failure(answer["error"])
    return dict(answer["ok"]), rest


_KINDS = {"not_found": SCode.S211, "parent_not_found": SCode.S211, "wrong_type": SCode.S212,
          "already_exists": SCode.S213, "not_empty": SCode.S214, "permission": SCode.S215,
          "io": SCode.S216, "regex": SCode.S217, "invalid": SCode.S210, "too_large": SCode.S210}
_PREFIX = {"not_found": "file not found: ", "parent_not_found": "parent directory not found: ",
           "already_exists": "already exists: ", "not_empty": "directory not empty: ",
           "permission": "permission denied: ", "io": "fs i/o error: "}


def fs_failure(error: dict[str, Any]) -> Exception:
    """The S-code error for a ``sandbox_fs`` failure (upstream's ``FsParentNotFound`` carries
    ``fix: {"parents": true}``)."""
    kind = str(error.get("kind"))
    message = str(error.get("message", ""))
    if kind == "parent_not_found":
        return sandbox_error(SCode.S211, _PREFIX[kind] + message, fix={"parents": True},
                             fix_note="merge `fix` into the original request and resubmit: "
                             "`parents: true` auto-creates missing intermediate directories")
    return sandbox_error(_KINDS.get(kind, SCode.S216), _PREFIX.get(kind, "") + message)
