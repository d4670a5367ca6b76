"""Fixtures for the launcher: a real busybox rootfs, real namespaces, the libkrun double."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.support.libkrun_double import build_libkrun_double
from tests.support.rootfs import make_busybox_rootfs
from tests.support.wait import wait_until
from vmm_ffi.cgroups.leaf import sweep_stale
from vmm_ffi.cgroups.limits import CGROUP_ROOT
from vmm_ffi.cgroups.v1 import v1_parents
from vmm_ffi.launch import read_exit, spawn_launcher, tail_lines
from vmm_ffi.params import ExitStatus, LaunchParams, LaunchResult, OverlayRoot

SANDBOX_ENV = {"PATH": "/bin:/usr/bin", "HOME": "/root", "LANG": "C.UTF-8"}
EXIT_TIMEOUT_S = 20.0


@pytest.fixture(scope="session")
def busybox_lower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention busybox image rootfs (the overlay's lower dir)."""
    return make_busybox_rootfs(tmp_path_factory.mktemp("image") / "rootfs")


@pytest.fixture(scope="session")
def libkrun_double(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled libkrun test double (``libkrun.so.1``)."""
    return build_libkrun_double(tmp_path_factory.mktemp("krun"))


class Sandboxes:
    """Factory for launcher-run sandboxes; tracks every launcher and kills leftovers."""

    def __init__(self, root: Path, lower: Path) -> None:
        self.root, self.lower = root, lower
        self.pids: list[int] = []
        self.logs: list[str] = []

    def params(self, argv: list[str], **overrides: Any) -> LaunchParams:
        d = self.root / uuid.uuid4().hex[:8]
        for sub in ("upper", "work", "merged", "logs"):
            (d / sub).mkdir(parents=True)
        fields: dict[str, Any] = {
            "name": "w1", "backend": "namespace",
            "rootfs": OverlayRoot(lower=[str(self.lower)], upper=str(d / "upper"),
                                  work=str(d / "work")),
            "merged": str(d / "merged"), "argv": argv, "env": dict(SANDBOX_ENV),
            "workdir": "/workspace", "log_path": str(d / "logs/worker.log"),
            "exit_path": str(d / "exit.json"), "hostname": "w1-box"}
        fields.update(overrides)
        return LaunchParams(**fields)

    def state_dir(self, params: LaunchParams) -> Path:
        return Path(params.exit_path).parent

    def spawn(self, params: LaunchParams) -> LaunchResult:
        self.logs.append(params.log_path)
        result = spawn_launcher(params, self.state_dir(params))
        self.pids.append(result.pid)
        return result

    def wait(self, result: LaunchResult, params: LaunchParams) -> tuple[int, ExitStatus]:
        """Reap the launcher; return (its exit code, the recorded exit.json)."""
        codes: list[int] = []

        def reaped() -> bool:
            pid, status = os.waitpid(result.pid, os.WNOHANG)
            if pid:
                codes.append(os.waitstatus_to_exitcode(status))
            return bool(pid)
        wait_until(reaped, EXIT_TIMEOUT_S, "launcher exit")
        recorded = read_exit(params.exit_path)
        assert recorded is not None, "launcher ended without exit.json"
        return codes[0], recorded

    def run(self, argv: list[str], **overrides: Any) -> tuple[int, ExitStatus, str]:
        params = self.params(argv, **overrides)
        result = self.spawn(params)
        code, status = self.wait(result, params)
        return code, status, Path(params.log_path).read_text()

    def log(self, params: LaunchParams) -> str:
        return "\n".join(tail_lines(params.log_path, 200))

    def close(self) -> None:
        # pytest shows a test's captured output only when it fails: the logs, for diagnosis.
        for path in self.logs:
            print(f"--- {path}\n" + "\n".join(tail_lines(path, 40)))
        for pid in self.pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        # A launcher killed above (or by a test) could not remove its leaf cgroups.
        sweep_stale(v1_parents(CGROUP_ROOT))
        self.pids.clear()  # a fixture that must see them gone first may close us early
        self.logs.clear()


@pytest.fixture
def sandboxes(tmp_path: Path, busybox_lower: Path) -> Iterator[Sandboxes]:
    factory = Sandboxes(tmp_path, busybox_lower)
    try:
        yield factory
    finally:
        factory.close()


def workload_lines(log: str) -> list[str]:
    """The log's lines written by the workload (the launcher's own start with a prefix)."""
    return [line for line in log.splitlines() if not line.startswith("[iii-launcher]")]


def replace(params: LaunchParams, **changes: Any) -> LaunchParams:
    return msgspec.structs.replace(params, **changes)
