"""The ``host`` backend (Binary workers): a plain host process under the same launcher model."""

from __future__ import annotations

import os
from pathlib import Path

from tests.vmm_ffi.conftest import Sandboxes, workload_lines
from vmm_ffi.params import DirectoryRoot


def host(sandboxes: Sandboxes, argv: list[str], tmp_path: Path, **env: str):
    return sandboxes.run(argv, backend="host", rootfs=DirectoryRoot(path="/"), merged="/",
                         workdir=str(tmp_path), env={"PATH": "/usr/bin:/bin", **env})


def test_host_process_runs_in_the_host_namespaces_and_workdir(sandboxes: Sandboxes,
                                                              tmp_path: Path) -> None:
    script = "readlink /proc/self/ns/pid; readlink /proc/self/ns/mnt; pwd; echo $W; exit 5"
    code, status, log = host(sandboxes, ["sh", "-c", script], tmp_path, W="x")
    assert (code, status.exit_code) == (5, 5)
    pid_ns, mnt_ns, cwd, w = workload_lines(log)
    assert pid_ns == os.readlink("/proc/self/ns/pid") and mnt_ns == os.readlink("/proc/self/ns/mnt")
    assert (cwd, w) == (str(tmp_path), "x")
    assert "resource limits" not in log  # no sandbox limits to report for a host process


def test_host_process_env_is_exactly_the_params_env(sandboxes: Sandboxes, tmp_path: Path,
                                                    monkeypatch) -> None:
    monkeypatch.setenv("III_CANARY_LEAK", "leaked")
    code, _, log = host(sandboxes, ["env"], tmp_path, III_WORKER_NAME="tool")
    assert code == 0
    seen = dict(line.split("=", 1) for line in workload_lines(log) if "=" in line)
    assert seen == {"PATH": "/usr/bin:/bin", "III_WORKER_NAME": "tool"}
