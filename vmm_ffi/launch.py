"""Starting a launcher from the daemon side (synchronous; wrap in ``asyncio.to_thread``).

``spawn_launcher(params, state_dir)`` writes ``state_dir/bootstrap.json`` atomically, starts
``python -S -m vmm_ffi.launcher bootstrap.json`` detached (own session, stdin /dev/null, stderr to
the worker log), reads its one ``LaunchResult`` line and returns it. The launcher is our child:
the caller reaps it (``os.waitpid(result.pid, ...)``) or, after a daemon restart, finds its end
in ``exit.json``.
"""

from __future__ import annotations

import importlib.util
import os
import selectors
import sys
import time
from collections import deque
from pathlib import Path

import msgspec

from vmm_ffi.errors import AlreadyRunning, LaunchFailed
from vmm_ffi.params import (
    EXIT_ALREADY_RUNNING,
    ExitStatus,
    LaunchParams,
    LaunchResult,
    decode_result,
    encode,
    read_exit_status,
)
from vmm_ffi.statefiles import write_atomic

LAUNCH_TIMEOUT_S = 30.0
BOOTSTRAP_NAME = "bootstrap.json"
LAUNCHER_MODULE = "vmm_ffi.launcher"
STDERR_TAIL_LINES = 20


def tail_lines(path: str, count: int = STDERR_TAIL_LINES) -> list[str]:
    """The last ``count`` lines of a text file ([] when unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode(errors="replace")
    except OSError:
        return []
    return list(deque(data.splitlines(), maxlen=count))


def spawn_launcher(params: LaunchParams, state_dir: str | os.PathLike[str], *,
                   timeout: float = LAUNCH_TIMEOUT_S,
                   python: str = sys.executable,
                   extra_env: dict[str, str] | None = None) -> LaunchResult:
    """Start one launcher for ``params``; return its ``LaunchResult``.

    Raises ``LaunchFailed`` (with the log's last lines) when the launcher exits before
    answering, answers garbage, or does not answer within ``timeout`` (it is then killed).
    """
    bootstrap = Path(state_dir) / BOOTSTRAP_NAME
    write_atomic(bootstrap, encode(params) + b"\n", mode=0o600)
    log_fd = os.open(params.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     0o640)
    out_r, out_w = os.pipe()
    try:
        pid = os.posix_spawn(
            python, [python, "-S", "-m", LAUNCHER_MODULE, str(bootstrap)],
            {**os.environ, "PYTHONPATH": launcher_python_path(), **(extra_env or {})},
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                          (os.POSIX_SPAWN_DUP2, out_w, 1),
                          (os.POSIX_SPAWN_DUP2, log_fd, 2)],
            setsid=True)
    finally:
        os.close(out_w)
        os.close(log_fd)
    try:
        line = read_line(out_r, timeout)
    except TimeoutError:
        _kill_and_reap(pid)
        raise LaunchFailed(f"launcher for {params.name} did not answer within {timeout:g}s "
                           "(LAUNCH_TIMEOUT_S)", None, tail_lines(params.log_path)) from None
    finally:
        os.close(out_r)
    if not line:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        tail = tail_lines(params.log_path)
        if code == EXIT_ALREADY_RUNNING:
            raise AlreadyRunning(tail[-1].removeprefix("error: ") if tail else
                                 f"sandbox {params.name} is already running", code, tail)
        raise LaunchFailed(f"launcher for {params.name} exited with code {code} before "
                           "answering", code, tail)
    try:
        return decode_result(line)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        _kill_and_reap(pid)
        raise LaunchFailed(f"launcher for {params.name} answered an invalid LaunchResult: "
                           f"{exc}", None, tail_lines(params.log_path)) from exc


def launcher_python_path() -> str:
    """PYTHONPATH that finds vmm_ffi and its dependencies without the ``site`` module.

    The launcher runs with ``python -S``: skipping site (and its .pth files, such as an
    editable install's finder) saves a sixth of its start time. So the directories holding
    our package, msgspec and cffi (libkrun backend) are named explicitly.
    """
    dirs: list[str] = []
    for module in ("vmm_ffi", "msgspec", "cffi", "_cffi_backend"):
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        top = origin.parent.parent if origin.name == "__init__.py" else origin.parent
        if str(top) not in dirs:
            dirs.append(str(top))
    inherited = os.environ.get("PYTHONPATH")
    return os.pathsep.join(dirs + ([inherited] if inherited else []))


def read_line(fd: int, timeout: float) -> bytes:
    """The first line a launcher writes to ``fd`` (its ``LaunchResult``), without the newline;
    b"" at EOF. Raises ``TimeoutError``."""
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError
            chunk = os.read(fd, 4096)
            if not chunk:
                return b""
            buf += chunk
    return buf.split(b"\n", 1)[0]


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def read_exit(path: str | os.PathLike[str]) -> ExitStatus | None:
    """The recorded ``exit.json``, or None while the sandbox has not ended (or none exists,
    or it is torn: the launcher writes it atomically, so that is a foreign file)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return read_exit_status(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
