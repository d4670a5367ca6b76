"""cgroup limits: what is written where on a v2 tree, the v1 refusals, the OOM report.

The v2 cases run against a plain directory laid out like a delegated cgroup (this machine class
has cgroup v1 only): they check what we write and where, not that the kernel enforces it (the
v1 path is enforced for real in test_limits_v1).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmm_ffi.cgroups import limits as cgroups
from vmm_ffi.cgroups.leaf import CgroupPlan, remove_leaf
from vmm_ffi.cgroups.limits import apply_limits, oom_kills, oom_message
from vmm_ffi.cgroups.v1 import apply_v1


def fake_v2(tmp_path: Path, own: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A v2 root at tmp_path whose /proc/self/cgroup says we live in ``own``."""
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::/{own}\n")
    real = cgroups.own_cgroup
    monkeypatch.setattr(cgroups, "own_cgroup", lambda root, _proc="": real(root, str(proc)))
    (tmp_path / own).mkdir(parents=True)
    return tmp_path


def test_v2_limits_written_to_a_sibling_of_the_daemon_leaf(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_v2(tmp_path, "system.slice/iii-daemon.service/daemon", monkeypatch)
    delegated = root / "system.slice/iii-daemon.service"
    (delegated / "cgroup.subtree_control").write_text("")
    plan = apply_limits("w1", 2, 256, None, root=str(root), pids_max=100)
    assert plan.note == "enforced" and plan.version == 2
    leaf = Path(plan.leaves[0])
    assert leaf.parent == delegated and leaf.name == f"iii-w1-{os.getpid()}"
    assert plan.origins == (str(delegated / "daemon"),)
    assert (delegated / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (leaf / "memory.max").read_text() == str(256 * 1024 * 1024)
    assert (leaf / "memory.swap.max").read_text() == "0"
    assert (leaf / "cpu.max").read_text() == "200000 100000"
    assert (leaf / "pids.max").read_text() == "100"
    assert (leaf / "cgroup.procs").read_text() == str(os.getpid())
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
    assert oom_kills(plan) == 1
    for f in leaf.iterdir():  # a real leaf's files vanish with it; a plain dir needs emptying
        f.unlink()
    remove_leaf(plan)
    assert not leaf.exists()
    assert (delegated / "daemon" / "cgroup.procs").read_text() == str(os.getpid())


def test_v2_explicit_delegated_dir_wins(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_v2(tmp_path, "user.slice/other", monkeypatch)
    delegated = root / "user.slice" / "iii"
    delegated.mkdir(parents=True)
    (delegated / "cgroup.subtree_control").write_text("memory cpu pids")
    plan = apply_limits("w1", 1, 128, str(delegated), root=str(root))
    assert Path(plan.leaves[0]).parent == delegated
    assert (delegated / "cgroup.subtree_control").read_text() == "memory cpu pids"
    assert (Path(plan.leaves[0]) / "pids.max").read_text() == str(cgroups.DEFAULT_PIDS_MAX)
    assert oom_kills(plan) == 0  # no memory.events: nothing to report


def test_undelegated_v2_is_reported_with_the_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_v2(tmp_path, "init.scope", monkeypatch)
    missing = root / "not-ours"
    plan = apply_limits("w1", 1, 64, str(missing), root=str(root))
    assert plan.path is None and plan.leaves == ()
    assert plan.note.startswith(f"not enforced: cgroup {missing} is not delegated to us (")


def test_v1_needs_root(tmp_path: Path) -> None:
    plan = apply_v1("w1", 1, 64, str(tmp_path), 4096, euid=1000)
    assert plan.note == "not enforced: this host has cgroup v1, which only a root daemon can use"


def test_v1_without_controllers_says_which(tmp_path: Path) -> None:
    plan = apply_v1("w1", 1, 64, str(tmp_path), 4096, euid=0)
    assert plan.note == "not enforced: cgroup v1 controller(s) memory, cpu, cpuacct, pids not " \
        f"mounted under {tmp_path}"


def test_oom_message_and_no_plan() -> None:
    assert oom_message(512) == "killed: out of memory (limit 512 MiB)"
    assert oom_kills(CgroupPlan(note="not enforced: host process")) == 0
    remove_leaf(CgroupPlan(note="enforced"))  # nothing to remove: never raises


def test_sweep_removes_only_dead_launchers_leaves(tmp_path: Path) -> None:
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    for entry in (f"iii-w1-{dead}", f"iii-w2-{os.getpid()}", "iii-odd-name", "other-1"):
        (tmp_path / entry).mkdir()
    assert cgroups.sweep_stale([str(tmp_path)]) == [str(tmp_path / f"iii-w1-{dead}")]
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        sorted([f"iii-w2-{os.getpid()}", "iii-odd-name", "other-1"])


def test_daemon_moves_into_its_leaf_and_launchers_use_siblings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = "user.slice/user@0.service/app.slice/iii-daemon.service"
    root = fake_v2(tmp_path, service, monkeypatch)
    proc = tmp_path / "proc-self-cgroup"
    message = cgroups.enter_daemon_leaf(str(root), str(proc))
    leaf = root / service / "daemon"
    assert message == f"moved to {leaf}; sandboxes get sibling leaves"
    assert (leaf / "cgroup.procs").read_text() == str(os.getpid())
    # What /proc/self/cgroup says from now on, as a launcher the daemon spawns sees it:
    proc.write_text(f"0::/{service}/daemon\n")
    assert cgroups.enter_daemon_leaf(str(root), str(proc)) == f"already in {leaf}"
    (root / service / "cgroup.subtree_control").write_text("")
    plan = apply_limits("w1", 1, 128, None, root=str(root))
    assert Path(plan.leaves[0]).parent == root / service


def test_daemon_leaf_reports_why_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cgroups.enter_daemon_leaf(str(tmp_path)) == \
        "cgroup v1 host: a root launcher makes its own leaves"
    root = fake_v2(tmp_path, "init.scope", monkeypatch)
    (root / "init.scope" / "daemon").write_text("a file where the leaf would go")
    message = cgroups.enter_daemon_leaf(str(root), str(tmp_path / "proc-self-cgroup"))
    assert message.startswith(f"cgroup {root / 'init.scope'} is not delegated to us (")
    assert message.endswith("without Delegate=yes sandbox limits cannot be enforced")


UNIFIED = Path("/sys/fs/cgroup/unified")  # the real cgroup2 hierarchy of a hybrid host


@pytest.mark.skipif(os.geteuid() != 0 or not (UNIFIED / "cgroup.controllers").exists(),
                    reason="needs root and the hybrid host's real cgroup2 hierarchy")
def test_real_v2_hierarchy_without_the_controllers_says_so(tmp_path: Path) -> None:
    # This host's memory, cpu and pids controllers are bound to cgroup v1 hierarchies (one of
    # them holds the machine's own processes), so its real cgroup2 hierarchy offers none of
    # them: the v2 code must say that, make nothing, and move nothing.
    available = (UNIFIED / "cgroup.controllers").read_text().split()
    if {"memory", "cpu", "pids"} <= set(available):
        pytest.skip("this cgroup2 hierarchy has the controllers: enforcement is testable here")
    delegated = UNIFIED / f"iii-test-{os.getpid()}"
    delegated.mkdir()
    try:
        plan = apply_limits("w1", 1, 64, str(delegated), root=str(UNIFIED))
        assert plan.leaves == () and plan.note.startswith("not enforced: cgroup v2 controller(s) ")
        assert f"not available in {delegated} (bound to cgroup v1" in plan.note
        assert list(delegated.glob("iii-*")) == []
        assert (delegated / "cgroup.procs").read_text() == ""
    finally:
        delegated.rmdir()
