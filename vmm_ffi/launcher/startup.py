"""A launcher's start, before it builds anything: its ``LaunchParams`` read and checked, and the
state dir's lock that makes it the sandbox's only launcher.

``vmm_ffi.launcher.program.main`` calls these in order; each failure is one line for stderr and
an exit code of ``vmm_ffi.params`` (2: invalid params, 75: already running).
"""

from __future__ import annotations

import fcntl
import os
import sys

import msgspec

from vmm_ffi.errors import AlreadyRunning, InvalidParams
from vmm_ffi.params import (
    EXIT_ALREADY_RUNNING,
    DirectoryRoot,
    LaunchParams,
    OverlayRoot,
    decode_params,
)

LOCK_NAME = "launcher.lock"


def load_params(argv: list[str]) -> LaunchParams:
    """Params from the file named in argv, or stdin; raises ``InvalidParams`` (one line)."""
    source = argv[0] if argv else "<stdin>"
    try:
        if argv:
            with open(argv[0], "rb") as f:
                raw = f.read()
        else:
            raw = sys.stdin.buffer.read()
    except OSError as exc:
        raise InvalidParams(f"cannot read launch params {source}: {exc.strerror}") from exc
    try:
        params = decode_params(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidParams(f"invalid launch params in {source}: {exc}") from exc
    check_params(params)
    return params


def lock_state_dir(params: LaunchParams) -> int:
    """Hold ``<state dir>/launcher.lock`` for the sandbox's life: one launcher per sandbox.

    The lock is an flock on an fd the sandbox child inherits (and the workload does not: it is
    close-on-exec), so it is released exactly when the last launcher-side process is gone.
    """
    path = os.path.join(os.path.dirname(params.exit_path), LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise AlreadyRunning(f"sandbox {params.name} is already running (launcher pid "
                             f"{holder} holds {path})", EXIT_ALREADY_RUNNING) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def check_params(params: LaunchParams) -> None:
    """The meaning checks msgspec cannot do: paths exist, strings are exec-safe."""
    def need_dir(path: str, field: str) -> None:
        if not os.path.isdir(path):
            raise InvalidParams(f"invalid launch params: {field} {path!r} is not a directory")
    if not sys.platform.startswith("linux"):
        if params.backend == "namespace":
            raise InvalidParams("invalid launch params: backend 'namespace' needs Linux")
        if not isinstance(params.rootfs, DirectoryRoot):
            raise InvalidParams("invalid launch params: rootfs 'overlay' needs Linux; use a "
                                "'directory' root (a clonefile copy) on macOS")
    if isinstance(params.rootfs, OverlayRoot):
        for i, lower in enumerate(params.rootfs.lower):
            need_dir(lower, f"rootfs.lower[{i}]")
    elif isinstance(params.rootfs, DirectoryRoot):
        need_dir(params.rootfs.path, "rootfs.path")
    need_dir(params.merged, "merged")
    need_dir(os.path.dirname(params.log_path), "log_path's directory")
    need_dir(os.path.dirname(params.exit_path), "exit_path's directory")
    if not params.argv[0]:
        raise InvalidParams("invalid launch params: argv[0] is empty")
    for key, value in params.env.items():
        if not key or "=" in key or "\0" in key + value:
            raise InvalidParams(f"invalid launch params: env key {key!r} (must be non-empty, "
                                "without '=' or NUL)")
    if any("\0" in a for a in params.argv):
        raise InvalidParams("invalid launch params: argv contains a NUL byte")
    for bind in params.binds:
        if not os.path.exists(bind.source):
            raise InvalidParams(f"invalid launch params: bind source {bind.source!r} missing")
