"""cgroup v1 limits for a root launcher: one leaf per controller (memory, cpu, cpuacct, pids).

v1 has no delegation model: only root may create cgroups, so a non-root daemon on a v1 host
gets "not enforced: <reason>". Each controller is its own hierarchy (``<root>/<controller>``;
where cpu and cpuacct are co-mounted both names resolve to one directory, used once). cpuacct
carries no limit: it is joined so the sandbox's CPU time can be read (``cpuacct.usage``).
"""

from __future__ import annotations

import os

from vmm_ffi.cgroups.leaf import (
    CPU_PERIOD_US,
    CgroupPlan,
    read_keyed,
    remove_leaf,
    sweep_stale,
    write,
)

CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
REQUIRED_FILE = {"memory": "memory.limit_in_bytes", "cpu": "cpu.cfs_quota_us",
                 "cpuacct": "cpuacct.usage", "pids": "cgroup.procs"}  # pids.* is not in the root


def own_v1_cgroups(proc: str = "/proc/self/cgroup") -> dict[str, str]:
    """Controller → this process's path in that hierarchy ("4:memory:/init.scope")."""
    out: dict[str, str] = {}
    try:
        with open(proc) as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for c in controllers.split(","):
                    out[c] = path
    except (OSError, ValueError):
        pass
    return out


def apply_v1(name: str, cpus: int, memory_mib: int, root: str, pids_max: int,
             euid: int | None = None) -> CgroupPlan:
    """Leaves ``<root>/<controller>/iii-<name>-<pid>`` with the limits, this process moved in."""
    if (os.geteuid() if euid is None else euid) != 0:
        return CgroupPlan(note="not enforced: this host has cgroup v1, which only a root "
                          "daemon can use")
    missing = [c for c in CONTROLLERS
               if not os.path.exists(os.path.join(root, c, REQUIRED_FILE[c]))
               or not os.path.ismount(os.path.realpath(os.path.join(root, c)))]
    if missing:
        return CgroupPlan(note=f"not enforced: cgroup v1 controller(s) {', '.join(missing)} "
                          f"not mounted under {root}")
    sweep_stale(v1_parents(root))
    own = own_v1_cgroups()
    leaves: list[str] = []
    origins: list[str] = []
    seen: set[str] = set()
    try:
        for c in CONTROLLERS:
            hierarchy = os.path.join(root, c)
            if os.path.realpath(hierarchy) in seen:
                continue
            seen.add(os.path.realpath(hierarchy))
            leaf = os.path.join(hierarchy, f"iii-{name}-{os.getpid()}")
            os.mkdir(leaf)
            leaves.append(leaf)
            origins.append(os.path.join(hierarchy, own.get(c, "/").lstrip("/")))
            _set_limits(c, leaf, cpus, memory_mib, pids_max)
        for leaf in leaves:
            write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
    except OSError as exc:
        remove_leaf(CgroupPlan(version=1, leaves=tuple(leaves), origins=tuple(origins),
                               note=""))
        return CgroupPlan(note=f"not enforced: cgroup v1 setup failed: "
                          f"{exc.filename}: {exc.strerror or exc}")
    return CgroupPlan(version=1, leaves=tuple(leaves), origins=tuple(origins), note="enforced")


def v1_parents(root: str) -> list[str]:
    """Where v1 leaves are made: each controller's hierarchy root."""
    return [os.path.join(root, c) for c in CONTROLLERS]


def _set_limits(controller: str, leaf: str, cpus: int, memory_mib: int, pids_max: int) -> None:
    if controller == "memory":
        limit = str(memory_mib * 1024 * 1024)
        write(os.path.join(leaf, "memory.limit_in_bytes"), limit)
        memsw = os.path.join(leaf, "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):  # absent without swap accounting; then swap is not capped
            write(memsw, limit)
    elif controller == "cpu":
        write(os.path.join(leaf, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
        write(os.path.join(leaf, "cpu.cfs_quota_us"), str(cpus * CPU_PERIOD_US))
    elif controller == "pids":
        write(os.path.join(leaf, "pids.max"), str(pids_max))


def v1_oom_kills(plan: CgroupPlan) -> int:
    """OOM kills in the memory leaf: memory.oom_control's ``oom_kill`` (kernel ≥ 4.13)."""
    for leaf in plan.leaves:
        control = os.path.join(leaf, "memory.oom_control")
        if os.path.exists(control):
            return read_keyed(control).get("oom_kill", 0)
    return 0
