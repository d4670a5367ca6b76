"""A fork bomb started through the daemon (SPEC §8 "resources"): stopped at the sandbox's process
cap (the pids cgroup of a root daemon; RLIMIT_NPROC where a non-root daemon on cgroup v1 has no
cgroup), while the daemon keeps answering and reports the worker sensibly."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support.pid_ns import tasks_in_pid_ns
from tests.support.projects import make_shell_project
from tests.support.wait import wait_until
from vmm_ffi.cgroups.limits import DEFAULT_PIDS_MAX

pytestmark = pytest.mark.host_exclusive  # the bomb loads the whole machine until it is capped


def test_fork_bomb_is_stopped_at_the_cap_and_the_daemon_keeps_answering(
        daemon_factory, busybox_image, tmp_path: Path) -> None:
    # The classic bomb in busybox sh, started in the background; the script's own shell then
    # execs (no fork needed) a sleep that keeps the worker running.
    project = make_shell_project(tmp_path, busybox_image, "bomb",
                                 start="echo up; b(){ b|b& }; b; exec sleep 1000",
                                 extra="resources:\n  memory: 512\n  cpus: 1\n")
    daemon = daemon_factory()
    daemon.json("worker", "add", str(project))
    started = daemon.json("worker", "start", "bomb")
    launcher = started["pid"]
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    # the sandbox's init: the launcher's child in a pid namespace of its own (the others are
    # pasta and the exit recorder)
    ns = next(n for n in (os.readlink(f"/proc/{c}/ns/pid") for c in children)
              if n != os.readlink(f"/proc/{launcher}/ns/pid"))
    wait_until(lambda: "can't fork" in daemon.iii("worker", "logs", "bomb", "--tail",
                                                  "20").stdout, 60, "the cap to refuse a fork")
    events = Path(f"/sys/fs/cgroup/pids/iii-bomb-{started['pid']}/pids.events")
    if os.geteuid() == 0:  # the pids cgroup said no, and counted it
        assert int(events.read_text().split()[1]) > 0
    else:
        limits = daemon.json("worker", "inspect", "bomb")["isolation_detail"]["limits"]
        assert limits.endswith(f"(processes: capped at {DEFAULT_PIDS_MAX} per sandbox uid by "
                               "RLIMIT_NPROC)")
    tasks = tasks_in_pid_ns(ns)
    assert 0 < tasks <= DEFAULT_PIDS_MAX
    t0 = time.monotonic()
    listed = daemon.iii("worker", "list", timeout=60)  # while the bomb runs against the cap
    print(f"iii worker list during the bomb: {time.monotonic() - t0:.2f} s ({tasks} tasks)")
    assert listed.returncode == 0, listed.stderr
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith("bomb "))
    assert row[2:4] == ["running", str(started["pid"])], listed.stdout
    stopped = daemon.json("worker", "stop", "bomb")
    assert stopped["status"] == "stopped", stopped
    # every process of the bomb went with the sandbox's init, and the launcher removed its leaf
    wait_until(lambda: tasks_in_pid_ns(ns) == 0, 30, "every process of the bomb to end")
    assert not events.parent.exists()
