"""Resource limits for a sandbox (memory, cpus, pids): cgroup v2 when delegated, else v1 as root.

v2: ``LaunchParams.cgroup`` names a delegated directory we may create children in; without it
the launcher's own cgroup is used, or its parent when the launcher was started from the
daemon's leaf (``DAEMON_LEAF``: v2 forbids processes in a cgroup that has controller-enabled
children, so the daemon keeps itself in ``<delegated>/daemon`` and each sandbox gets a sibling).
v1 (``vmm_ffi.cgroups.v1``): a root launcher makes one leaf per controller.

The launcher moves itself into the leaf before it forks the sandbox, so every sandbox process is
accounted there, and reads the OOM-kill count before it removes the leaf (``oom_kills``), so a
worker killed for memory is reported as such. Nothing here is fatal: any failure becomes
"not enforced: <reason>".
"""

from __future__ import annotations

import os

from vmm_ffi.cgroups.leaf import CPU_PERIOD_US, CgroupPlan, read_keyed, sweep_stale, write
from vmm_ffi.cgroups.v1 import apply_v1, v1_oom_kills

CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_ROOT_ENV = "III_LAUNCHER_CGROUP_ROOT"  # where the launcher looks instead (bench, tests)
DAEMON_LEAF = "daemon"
# Enough for a parallel cargo/npm build (threads count as pids too), far below the host's
# pid_max: a fork bomb stops here instead of starving the daemon and every other worker.
DEFAULT_PIDS_MAX = 4096


def own_cgroup(root: str = CGROUP_ROOT, proc: str = "/proc/self/cgroup") -> str | None:
    """This process's v2 cgroup directory, from /proc/self/cgroup ("0::/path")."""
    try:
        with open(proc) as f:
            for line in f:
                if line.startswith("0::"):
                    return os.path.join(root, line[3:].strip().lstrip("/"))
    except OSError:
        return None
    return None


def is_v2(root: str = CGROUP_ROOT) -> bool:
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def apply_limits(name: str, cpus: int, memory_mib: int, delegated: str | None,
                 root: str = CGROUP_ROOT, pids_max: int = DEFAULT_PIDS_MAX) -> CgroupPlan:
    """Create the sandbox's leaf cgroup(s) with the limits and move this process in, or say why not."""
    if is_v2(root):
        return _apply_v2(name, cpus, memory_mib, delegated, root, pids_max)
    return apply_v1(name, cpus, memory_mib, root, pids_max)


def _apply_v2(name: str, cpus: int, memory_mib: int, delegated: str | None, root: str,
              pids_max: int) -> CgroupPlan:
    own = own_cgroup(root)
    if own is None:
        return CgroupPlan(note="not enforced: no cgroup v2 membership found")
    base = delegated or (os.path.dirname(own) if os.path.basename(own) == DAEMON_LEAF else own)
    leaf = os.path.join(base, f"iii-{name}-{os.getpid()}")
    sweep_stale([base])
    try:
        with open(os.path.join(base, "cgroup.controllers")) as f:
            available = set(f.read().split())
    except OSError:  # not a cgroup we can read: said below, on the first write
        available = {"memory", "cpu", "pids"}
    absent = [c for c in ("memory", "cpu", "pids") if c not in available]
    if absent:  # e.g. a hybrid host: these controllers are bound to cgroup v1 hierarchies
        return CgroupPlan(note=f"not enforced: cgroup v2 controller(s) {', '.join(absent)} "
                          f"not available in {base} (bound to cgroup v1, or not delegated)")
    try:
        with open(os.path.join(base, "cgroup.subtree_control")) as f:
            enabled = set(f.read().split())
        missing = {"memory", "cpu", "pids"} - enabled
        if missing:
            write(os.path.join(base, "cgroup.subtree_control"),
                  " ".join(f"+{c}" for c in sorted(missing)))
        os.mkdir(leaf)
        write(os.path.join(leaf, "memory.max"), str(memory_mib * 1024 * 1024))
        write(os.path.join(leaf, "memory.swap.max"), "0")  # else the limit only moves to swap
        write(os.path.join(leaf, "cpu.max"), f"{cpus * CPU_PERIOD_US} {CPU_PERIOD_US}")
        write(os.path.join(leaf, "pids.max"), str(pids_max))
        write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
    except OSError as exc:
        try:
            os.rmdir(leaf)
        except OSError:
            pass
        return CgroupPlan(note=f"not enforced: cgroup {base} is not delegated to us "
                          f"({exc.strerror or exc})")
    return CgroupPlan(version=2, leaves=(leaf,), origins=(own,), note="enforced")


def enter_daemon_leaf(root: str = CGROUP_ROOT, proc: str = "/proc/self/cgroup") -> str:
    """Move this process (the daemon) into ``<own cgroup>/daemon``; returns what happened.

    cgroup v2's "no internal processes" rule: a cgroup that hands controllers to children may
    hold no process itself. With ``Delegate=yes`` systemd gives us the service cgroup; the daemon
    vacates it so launchers (started from the leaf) can make sibling leaves with limits.
    """
    if not is_v2(root):
        return "cgroup v1 host: a root launcher makes its own leaves"
    own = own_cgroup(root, proc)
    if own is None:
        return "no cgroup v2 membership found"
    if os.path.basename(own) == DAEMON_LEAF:
        return f"already in {own}"
    leaf = os.path.join(own, DAEMON_LEAF)
    try:
        os.makedirs(leaf, exist_ok=True)
        write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
    except OSError as exc:
        return f"cgroup {own} is not delegated to us ({exc.strerror or exc}); without " \
            "Delegate=yes sandbox limits cannot be enforced"
    return f"moved to {leaf}; sandboxes get sibling leaves"


def oom_kills(plan: CgroupPlan) -> int:
    """How many processes the kernel OOM-killed in the sandbox's memory cgroup."""
    if plan.version == 2:
        return read_keyed(os.path.join(plan.leaves[0], "memory.events")).get("oom_kill", 0)
    if plan.version == 1:
        return v1_oom_kills(plan)
    return 0


def oom_message(memory_mib: int) -> str:
    """What ``list``/``inspect``/``logs`` show for a worker killed for its memory."""
    return f"killed: out of memory (limit {memory_mib} MiB)"
