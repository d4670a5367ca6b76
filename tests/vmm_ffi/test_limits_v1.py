"""Resource limits enforced for real through cgroup v1 (this machine class), as root.

Each test runs a real launcher on the busybox rootfs and reads the kernel's own accounting in the
sandbox's leaf cgroups (found from /proc/<sandbox pid>/cgroup), then checks the leaves are gone.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.support.wait import wait_until
from tests.vmm_ffi.conftest import Sandboxes
from vmm_ffi.cgroups.leaf import read_keyed
from vmm_ffi.cgroups.limits import CGROUP_ROOT, is_v2

pytestmark = [
    pytest.mark.host_exclusive,  # cpu quotas are measured against the clock
    pytest.mark.skipif(is_v2(), reason="host has cgroup v2; v2 is checked on a fake tree"),
    pytest.mark.skipif(os.geteuid() != 0, reason="cgroup v1 limits need a root launcher"),
]

MEASURE_S = 3.0


def leaf_of(pid: int, controller: str) -> Path:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path(CGROUP_ROOT, controller, path.lstrip("/"))
    raise AssertionError(f"pid {pid} has no {controller} cgroup")


def test_memory_hog_is_oom_killed_and_reported(sandboxes: Sandboxes) -> None:
    # busybox dd allocates (and fills) one block of bs bytes: 256 MiB against a 64 MiB limit.
    params = sandboxes.params(["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=4"],
                              memory_mib=64)
    result = sandboxes.spawn(params)
    assert result.limits == "enforced"
    leaves = [leaf_of(result.pid, c) for c in ("memory", "cpu", "cpuacct", "pids")]
    assert (leaves[0] / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    code, status = sandboxes.wait(result, params)
    assert status.error == "killed: out of memory (limit 64 MiB)", status
    assert code == 137
    assert "(killed: out of memory (limit 64 MiB))" in Path(params.log_path).read_text()
    assert not any(leaf.exists() for leaf in leaves), "leaf cgroups left behind"


def test_busy_loop_on_all_cores_is_held_to_its_quota(sandboxes: Sandboxes) -> None:
    cores = os.cpu_count() or 1
    spin = " ".join(["while :; do :; done &"] * max(2, cores)) + " wait"
    params = sandboxes.params(["sh", "-c", spin], cpus=1)
    result = sandboxes.spawn(params)
    acct, cpu = leaf_of(result.pid, "cpuacct"), leaf_of(result.pid, "cpu")
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "100000"
    wait_until(lambda: int((acct / "cpuacct.usage").read_text()) > 50_000_000, 10,
               "the loops spinning")
    used0, t0 = int((acct / "cpuacct.usage").read_text()), time.monotonic()
    wait_until(lambda: time.monotonic() - t0 >= MEASURE_S, MEASURE_S + 5, "measure interval")
    used1, t1 = int((acct / "cpuacct.usage").read_text()), time.monotonic()
    cores_used = (used1 - used0) / 1e9 / (t1 - t0)
    # Proof the quota bites: some 100 ms period in which the loops wanted more than 1 core. On
    # a machine busy with other work that can take a while, hence the long timeout.
    throttled = wait_until(lambda: read_keyed(str(cpu / "cpu.stat")).get("nr_throttled", 0), 60,
                           "the cpu quota throttling the loops")
    os.kill(result.pid, signal.SIGTERM)
    sandboxes.wait(result, params)
    # Shared 2-core machine: the lower bound only says the loops ran; the quota is the upper one.
    assert 0.2 <= cores_used <= 1.3, f"{cores_used:.2f} cores used with cpus=1"
    assert throttled > 0
    assert not acct.exists() and not cpu.exists()


def test_fork_bomb_is_stopped_by_the_pids_cap(sandboxes: Sandboxes) -> None:
    params = sandboxes.params(["sh", "-c", "bomb() { bomb | bomb & }; bomb; exec sleep 1000"],
                              pids_max=64, memory_mib=256)
    result = sandboxes.spawn(params)
    pids = leaf_of(result.pid, "pids")
    assert (pids / "pids.max").read_text().strip() == "64"
    wait_until(lambda: read_keyed(str(pids / "pids.events")).get("max", 0) > 0, 20,
               "a fork refused at the cap")
    assert int((pids / "pids.current").read_text()) <= 64
    # The launcher (inside the cap, but no longer forking) still forwards and records.
    os.kill(result.pid, signal.SIGTERM)
    code, status = sandboxes.wait(result, params)
    assert status.exit_code == code and status.error is None
    assert not pids.exists(), "leaf cgroup left behind"
