"""cgroup v2 limits (memory.max, cpu.max) for a sandbox, or the reason they are not enforced.

Only a delegated v2 hierarchy can be used without privilege: ``LaunchParams.cgroup`` names a
directory we may create children in; without it, the launcher's own cgroup is tried. The
launcher moves itself into the new leaf before it forks the sandbox, so every sandbox process
is accounted there. Nothing here is fatal: any failure becomes "not enforced: <reason>".
"""

from __future__ import annotations

import os

import msgspec

CGROUP_ROOT = "/sys/fs/cgroup"
CPU_PERIOD_US = 100_000


class CgroupPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Where the sandbox's limits live (``path``) and what the launcher reports (``note``)."""

    path: str | None
    note: str


def own_cgroup(root: str = CGROUP_ROOT) -> str | None:
    """This process's v2 cgroup directory, from /proc/self/cgroup ("0::/path")."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return os.path.join(root, line[3:].strip().lstrip("/"))
    except OSError:
        return None
    return None


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def apply_limits(name: str, cpus: int, memory_mib: int, delegated: str | None,
                 root: str = CGROUP_ROOT) -> CgroupPlan:
    """Create a leaf cgroup with the limits and move this process into it, or say why not."""
    if not os.path.exists(os.path.join(root, "cgroup.controllers")):
        return CgroupPlan(path=None, note="not enforced: cgroup v2 is not mounted at "
                          f"{root} (this host uses cgroup v1)")
    base = delegated or own_cgroup(root)
    if base is None:
        return CgroupPlan(path=None, note="not enforced: no cgroup v2 membership found")
    leaf = os.path.join(base, f"iii-{name}-{os.getpid()}")
    try:
        with open(os.path.join(base, "cgroup.subtree_control")) as f:
            enabled = set(f.read().split())
        missing = {"memory", "cpu"} - enabled
        if missing:
            _write(os.path.join(base, "cgroup.subtree_control"),
                   " ".join(f"+{c}" for c in sorted(missing)))
        os.mkdir(leaf)
        _write(os.path.join(leaf, "memory.max"), str(memory_mib * 1024 * 1024))
        _write(os.path.join(leaf, "cpu.max"), f"{cpus * CPU_PERIOD_US} {CPU_PERIOD_US}")
        _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
    except OSError as exc:
        try:
            os.rmdir(leaf)
        except OSError:
            pass
        return CgroupPlan(path=None, note=f"not enforced: cgroup {base} is not delegated to "
                          f"us ({exc.strerror or exc})")
    return CgroupPlan(path=leaf, note="enforced")


def remove_leaf(plan: CgroupPlan) -> None:
    """Remove the sandbox's leaf cgroup once it is empty (best effort)."""
    if plan.path is None:
        return
    try:
        parent = os.path.dirname(plan.path)
        _write(os.path.join(parent, "cgroup.procs"), str(os.getpid()))
        os.rmdir(plan.path)
    except OSError:
        pass  # an empty leaf left behind costs nothing; the kernel frees it with the parent
