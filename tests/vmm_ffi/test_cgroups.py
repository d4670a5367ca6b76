"""cgroup v2 limits: the v1 report on this host, and the values written to a v2 hierarchy.

The v2 case runs against a plain directory laid out like a delegated cgroup (this machine
class has cgroup v1 only): it checks what we write and where, not that the kernel enforces it.
"""

from __future__ import annotations

import os
from pathlib import Path

from vmm_ffi.cgroups import apply_limits, remove_leaf


def test_v1_host_reports_not_enforced(tmp_path: Path) -> None:
    plan = apply_limits("w1", 2, 256, None, root=str(tmp_path))
    assert plan.path is None
    assert plan.note == f"not enforced: cgroup v2 is not mounted at {tmp_path} (this host " \
        "uses cgroup v1)"


def test_v2_limits_written_to_a_leaf(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    delegated = tmp_path / "user.slice" / "iii"
    delegated.mkdir(parents=True)
    (delegated / "cgroup.subtree_control").write_text("")
    plan = apply_limits("w1", 2, 256, str(delegated), root=str(tmp_path))
    assert plan.note == "enforced" and plan.path is not None
    leaf = Path(plan.path)
    assert leaf.parent == delegated and leaf.name == f"iii-w1-{os.getpid()}"
    assert (delegated / "cgroup.subtree_control").read_text() == "+cpu +memory"
    assert (leaf / "memory.max").read_text() == str(256 * 1024 * 1024)
    assert (leaf / "cpu.max").read_text() == "200000 100000"
    assert (leaf / "cgroup.procs").read_text() == str(os.getpid())
    remove_leaf(plan)  # best effort: never raises


def test_undelegated_v2_is_reported_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    missing = tmp_path / "not-ours"
    plan = apply_limits("w1", 1, 64, str(missing), root=str(tmp_path))
    assert plan.path is None
    assert plan.note.startswith(f"not enforced: cgroup {missing} is not delegated to us (")
