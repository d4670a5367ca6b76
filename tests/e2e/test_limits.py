"""Resource limits seen through the daemon and the CLI (SPEC §8 "resources"): a worker that
allocates past its memory limit is OOM-killed, says so in list/inspect/logs, and is restarted
with the normal backoff. Real daemon, real registry, real namespace sandbox on cgroup v1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.projects import make_shell_project
from tests.support.wait import wait_until
from vmm_ffi.cgroups.limits import is_v2

pytestmark = [
    pytest.mark.host_exclusive,  # cpu quotas are measured against the clock
    pytest.mark.skipif(is_v2(), reason="host has cgroup v2 without a delegated subtree here"),
    pytest.mark.skipif(os.geteuid() != 0, reason="cgroup v1 limits need a root daemon"),
]

OOM = "killed: out of memory (limit 128 MiB)"


def test_oom_killed_worker_is_reported_and_restarted(daemon_factory, busybox_image,
                                                     tmp_path: Path) -> None:
    # busybox dd allocates and fills one 512 MiB block: four times the limit.
    project = make_shell_project(tmp_path, busybox_image, "hog",
                                 start="echo up; dd if=/dev/zero of=/dev/null bs=512M count=1",
                                 extra="resources:\n  memory: 128\n")
    daemon = daemon_factory()
    daemon.json("worker", "add", str(project))
    assert daemon.iii("worker", "start", "hog").returncode == 0
    worker = wait_until(lambda: (w := daemon.worker("hog"))["restarts"] >= 1 and w, 30,
                        "an OOM kill and a restart by the backoff")
    assert worker["last_error"] == OOM and worker["last_exit_code"] == 137
    listed = wait_until(lambda: (out := daemon.iii("worker", "list").stdout)
                        and f"({OOM})" in out and out, 30, "list to show the OOM kill")
    assert any(line.split()[0] == "hog" for line in listed.splitlines() if OOM in line)
    inspect = daemon.iii("worker", "inspect", "hog").stdout
    assert f"137 ({OOM})" in inspect
    assert f"({OOM})" in daemon.iii("worker", "logs", "hog", "--tail", "100").stdout
    assert daemon.iii("worker", "stop", "hog").returncode == 0

