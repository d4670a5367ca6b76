"""What isolation is in place: per running sandbox (``inspect``) and per host (``daemon status``).

The sandbox's own figures come from its launcher's ``LaunchResult``, kept in ``launcher.pid``
so they survive a daemon restart; the host's are probed here without changing anything (the
subordinate range is only read: a start adds it when missing).
"""

from __future__ import annotations

import os
from pathlib import Path

from client.protocol.messages import HostIsolation, SandboxIsolation
from daemon.config.settings import DaemonSettings
from daemon.sandboxes import SandboxLayout
from daemon.sandboxes.procinfo import read_pid_record
from daemon.sandboxes.subids import ID_RANGE, SANDBOX_USER, SUBUID, parse_ranges
from vmm_ffi.network.bridge import bridge_problem, names, tag_of
from vmm_ffi.network.helper import find_helper, tun_problem

CGROUP_ROOT = Path("/sys/fs/cgroup")


def sandbox_isolation(layout: SandboxLayout) -> SandboxIsolation | None:
    """The running sandbox's isolation, or None (no launcher record). Blocking: a file read."""
    record = read_pid_record(layout.pid_file)
    launch = None if record is None else record.launch
    if launch is None:
        return None
    network = {"pasta": "own network namespace (pasta)",
               "slirp4netns": "own network namespace (slirp4netns)",
               "none": "own network namespace (loopback only)",
               "bridge": "own network namespace (bridge, no helper process)",
               "host": "the host's network",
               "tsi": "the VM's (libkrun TSI)"}[launch.network]
    if launch.policy:
        network = f"{network}; policy {launch.policy}"
    return SandboxIsolation(backend=launch.backend, network=network,
                            id_map=launch.id_map or "unknown", limits=launch.limits,
                            no_new_privs=launch.seccomp is not None or launch.backend == "libkrun",
                            seccomp=launch.seccomp)


def host_isolation(settings: DaemonSettings) -> HostIsolation:
    """What this host can give namespace sandboxes. Blocking (reads files): use a thread."""
    return HostIsolation(network=_network(settings), ids=_ids(), cgroups=_cgroups())


def _network(settings: DaemonSettings) -> str:
    default = settings.network_default
    if default.policy == "host":
        return "the host's network (network: host in daemon.yaml)"
    policy = f"; default policy {default.policy}" + "".join(
        f", {label} {', '.join(entries)}" for label, entries in
        (("allow", default.allow), ("deny", default.deny)) if entries)
    if default.policy == "none":
        return f"own network namespace, loopback only{policy}"
    if settings.network_backend in ("auto", "bridge") and bridge_problem() is None:
        bridge, _ = names(tag_of(str(settings.home)))
        return f"own network namespace on the bridge {bridge} (no helper process){policy}"
    helper = find_helper()
    if helper is None:
        return "unavailable: pasta is not installed, nor slirp4netns (apt-get install passt)"
    mode, binary = helper
    second = " (pasta is not installed: the second choice)" if mode == "slirp4netns" else ""
    problem = tun_problem()
    return f"unavailable: {problem}" if problem else \
        f"own network namespace via {binary}{second}{policy}"


def _ids() -> str:
    if os.geteuid() != 0:
        return f"sandbox root is this daemon's uid {os.geteuid()} (a non-root daemon)"
    try:
        ranges = parse_ranges(SUBUID.read_text())
    except OSError:
        ranges = []
    start = next((s for name, s, count in ranges if name == SANDBOX_USER and count >= ID_RANGE),
                 None)
    if start is None:
        return f"subordinate range of {SANDBOX_USER}: added to {SUBUID} at the first start"
    return f"subordinate range {start}-{start + ID_RANGE - 1} ({SANDBOX_USER} in {SUBUID})"


def _cgroups() -> str:
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return "cgroup v2"
    controllers = [c for c in ("memory", "cpu", "pids") if (CGROUP_ROOT / c).is_dir()]
    if controllers:
        return f"cgroup v1 ({', '.join(controllers)})"
    return "no cgroup hierarchy found"
