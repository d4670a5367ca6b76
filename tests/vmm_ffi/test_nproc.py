"""A fork bomb where no pids cgroup can be made (a non-root launcher on cgroup v1, as in the
non-root run here): the sandbox init's RLIMIT_NPROC stops it at ``pids_max``."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.pid_ns import tasks_in_pid_ns
from tests.support.wait import wait_until
from tests.vmm_ffi.conftest import Sandboxes, workload_lines
from vmm_ffi.cgroups.limits import CGROUP_ROOT_ENV
from vmm_ffi.params import IdShift

CAP = 64
SAMPLE_S = 2.0


def test_without_a_pids_cgroup_rlimit_nproc_stops_a_fork_bomb(
        sandboxes: Sandboxes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "no-cgroups").mkdir()
    monkeypatch.setenv(CGROUP_ROOT_ENV, str(tmp_path / "no-cgroups"))  # as on a host without
    # host root is exempt from RLIMIT_NPROC: a root launcher shifts ids, as a root daemon does
    shift = {"id_shift": IdShift(uid_base=3_000_000, gid_base=3_000_000)} \
        if os.geteuid() == 0 else {}
    params = sandboxes.params(["sh", "-c", "echo up; b(){ b|b& }; b; exec sleep 30"],
                              pids_max=CAP, **shift)
    result = sandboxes.spawn(params)
    assert result.limits.startswith("not enforced: ")
    assert result.limits.endswith(f"(processes: capped at {CAP} per sandbox uid by "
                                  "RLIMIT_NPROC)")
    ns = os.readlink(f"/proc/{result.sandbox_pid}/ns/pid")
    wait_until(lambda: "can't fork" in Path(params.log_path).read_text(), 10,
               "the bomb to hit the cap")
    deadline, most = time.monotonic() + SAMPLE_S, 0
    while time.monotonic() < deadline:
        most = max(most, tasks_in_pid_ns(ns))
        time.sleep(0.05)
    assert 0 < most <= CAP, most
    os.kill(result.pid, signal.SIGTERM)  # to the sleep; the init's end takes the bomb along
    code, _ = sandboxes.wait(result, params)
    assert code == 143, workload_lines(Path(params.log_path).read_text())[-5:]
    wait_until(lambda: tasks_in_pid_ns(ns) == 0, 10, "every process of the bomb to end")
