"""A sandbox's leaf cgroups, whichever version: the plan the launcher keeps, the files it writes
and reads, and removal (its own at exit, a dead launcher's at the next start). Shared by the v2
code in ``cgroups.limits`` and the v1 code in ``cgroups.v1``, which both import it.
"""

from __future__ import annotations

import contextlib
import os
import time

import msgspec

CPU_PERIOD_US = 100_000
EMPTY_WAIT_S = 2.0  # a killed sandbox's processes leave its cgroup within milliseconds


class CgroupPlan(msgspec.Struct, frozen=True, kw_only=True):
    """The sandbox's leaf cgroups (one per v1 controller, one for v2) and the launcher's report.

    ``origins`` are the cgroups the launcher came from (it moves back before removing a leaf);
    ``note`` is "enforced" or "not enforced: <reason>" (``LaunchResult.limits``).
    """

    version: int = 0  # 0 = none, 1 or 2
    leaves: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()
    note: str

    @property
    def path(self) -> str | None:
        """The first leaf (the v2 leaf), or None when nothing is enforced."""
        return self.leaves[0] if self.leaves else None


def write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def read_keyed(path: str) -> dict[str, int]:
    """A flat "key value" cgroup file (memory.events, memory.oom_control, pids.events)."""
    out: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if value.strip().lstrip("-").isdigit():
                    out[key] = int(value)
    except OSError:
        pass
    return out


def sweep_stale(parents: list[str]) -> list[str]:
    """Remove the leaves of launchers that died without cleaning up (SIGKILL); returns them.

    A leaf is ``iii-<name>-<launcher pid>``: one whose launcher is gone and that holds no process
    is stale. A live launcher's leaf is never touched (its pid exists), so concurrent starts
    cannot race with this.
    """
    removed: list[str] = []
    for parent in parents:
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for entry in names:
            pid = entry.rpartition("-")[2]
            if not entry.startswith("iii-") or not pid.isdigit() or \
                    os.path.exists(f"/proc/{pid}"):
                continue
            try:
                os.rmdir(os.path.join(parent, entry))
                removed.append(os.path.join(parent, entry))
            except OSError:
                pass  # still has processes, or not ours to remove
    return removed


def move_to_origins(plan: CgroupPlan, pid: int) -> None:
    """Move ``pid`` back to the cgroups the launcher came from (best effort)."""
    for origin in plan.origins:
        with contextlib.suppress(OSError):
            write(os.path.join(origin, "cgroup.procs"), str(pid))


def remove_leaf(plan: CgroupPlan) -> None:
    """Move this process back where it came from and remove the sandbox's leaves (best effort).

    Waits briefly for the sandbox's last processes to leave (a killed pid namespace is torn
    down asynchronously); a leaf still busy after that stays, and costs nothing but its name.
    """
    move_to_origins(plan, os.getpid())
    for leaf in plan.leaves:
        deadline = time.monotonic() + EMPTY_WAIT_S
        while True:
            try:
                os.rmdir(leaf)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
