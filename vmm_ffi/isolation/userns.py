"""A user namespace with our id maps: the launcher's, and short-lived helpers' (an overlay probe,
removing a tree a sandbox wrote under its subordinate ids).

The maps are written from the parent user namespace: host root maps a whole range (1:1, or
shifted into a subordinate range, ``vmm_ffi.isolation.idmap``); a non-root user with a
subordinate range in /etc/subuid and /etc/subgid gets it through newuidmap/newgidmap; anyone
else maps only themselves, as root. Run as ``python -m vmm_ffi.isolation.userns remove PATH``
by ``daemon.trees``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys

import msgspec

from vmm_ffi import syscalls as sc
from vmm_ffi.errors import SetupFailed
from vmm_ffi.isolation.idmap import ID_RANGE, map_lines, remove_tree_here
from vmm_ffi.params import IdShift, LaunchParams

# Root on the host maps a whole 16-bit range so images' own users (apt's _apt, nobody) and
# chown work; the sandbox's root is host root only for file ownership, its capabilities stay
# confined to namespaces it owns. An unprivileged host user maps only itself, as root.
ROOT_ID_RANGE = 65536
NEWUIDMAP, NEWGIDMAP = "newuidmap", "newgidmap"
SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"
MAP_TOOL_TIMEOUT_S = 10.0


class UserMaps(msgspec.Struct, frozen=True):
    """newuidmap/newgidmap arguments: sandbox 0 = the user, 1..N = their subordinate range."""

    uid_args: list[str]
    gid_args: list[str]
    uid_start: int
    gid_start: int
    count: int


def _subordinate(path: str, name: str, id_: int) -> tuple[int, int] | None:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (name, str(id_)) and parts[1].isdigit() \
                and parts[2].isdigit() and int(parts[2]) > 0:
            return int(parts[1]), int(parts[2])
    return None


def user_maps(uid: int, gid: int) -> UserMaps | None:
    """The maps a non-root user may have through newuidmap/newgidmap, or None (then only the
    user's own uid is mapped, to root)."""
    if uid == 0 or shutil.which(NEWUIDMAP) is None or shutil.which(NEWGIDMAP) is None:
        return None
    try:
        name = pwd.getpwuid(uid).pw_name  # both tools look ranges up by the user's name
    except KeyError:
        return None
    subuid, subgid = _subordinate(SUBUID, name, uid), _subordinate(SUBGID, name, uid)
    if subuid is None or subgid is None:
        return None
    count = min(subuid[1], subgid[1], ID_RANGE - 1)
    return UserMaps(uid_args=["0", str(uid), "1", "1", str(subuid[0]), str(count)],
                    gid_args=["0", str(gid), "1", "1", str(subgid[0]), str(count)],
                    uid_start=subuid[0], gid_start=subgid[0], count=count)


def write_user_maps(pid: int, maps: UserMaps) -> None:
    """Run newuidmap/newgidmap for ``pid``; raises ``OSError`` with the tool's message."""
    for tool, args in ((NEWUIDMAP, maps.uid_args), (NEWGIDMAP, maps.gid_args)):
        try:
            proc = subprocess.run([tool, str(pid), *args], check=False, capture_output=True,
                                  text=True, timeout=MAP_TOOL_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OSError(f"{tool}: {exc}") from exc
        if proc.returncode != 0:
            raise OSError(f"{tool}: {proc.stderr.strip() or f'exit code {proc.returncode}'}")


def id_maps(host_uid: int, host_gid: int,
            shift: IdShift | None = None) -> tuple[str, str, bool]:
    """(uid_map, gid_map, deny_setgroups) for a sandbox created by ``host_uid``."""
    if host_uid == 0 and shift is not None:
        return *map_lines(shift), False
    if host_uid == 0:
        line = f"0 0 {ROOT_ID_RANGE}\n"
        return line, line, False
    return f"0 {host_uid} 1\n", f"0 {host_gid} 1\n", True


def write_id_maps(pid: int, host_uid: int, host_gid: int,
                  shift: IdShift | None = None) -> None:
    """Write /proc/<pid>/{uid,gid}_map from the parent user namespace."""
    uid_map, gid_map, deny = id_maps(host_uid, host_gid, shift)
    if deny:
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
    with open(f"/proc/{pid}/uid_map", "w") as f:
        f.write(uid_map)
    with open(f"/proc/{pid}/gid_map", "w") as f:
        f.write(gid_map)


def unshare_with_id_map(flags: int, shift: IdShift | None = None) -> None:
    """Unshare ``flags`` (which include CLONE_NEWUSER) and become root inside.

    The id maps must be written from the parent user namespace, so a short-lived forked helper
    that stayed outside writes them while we wait. A non-root user with a subordinate range
    (``/etc/subuid``, ``/etc/subgid``) gets it through newuidmap/newgidmap as ids 1..65535, so
    images' own users (apt's ``_apt``) and ``chown`` work, as in rootless podman.
    """
    uid, gid = os.geteuid(), os.getegid()
    wide = None if uid == 0 else user_maps(uid, gid)  # a user's subordinate range, if any
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    me = os.getpid()
    helper = os.fork()
    if helper == 0:  # helper: still in the host user namespace
        code = 0
        try:
            os.close(ready_w)
            os.close(done_r)
            if os.read(ready_r, 1) == b"1":
                if wide is not None:
                    write_user_maps(me, wide)
                else:
                    write_id_maps(me, uid, gid, shift)
                os.write(done_w, b"ok")
        except OSError as exc:
            os.write(done_w, f"write id maps: {exc}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(ready_r)
    os.close(done_w)
    try:
        try:
            sc.unshare(flags)
        except OSError as exc:
            os.write(ready_w, b"0")
            raise SetupFailed("unshare namespaces", str(exc)) from exc
        os.write(ready_w, b"1")
        answer = os.read(done_r, 4096).decode(errors="replace")
    finally:
        os.close(ready_w)
        os.close(done_r)
        os.waitpid(helper, 0)
    if answer != "ok":
        raise SetupFailed("user namespace", answer or "id map helper died")
    if uid == 0 or wide is not None:  # setgroups is denied only with a single-id map
        os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def describe_id_map(params: LaunchParams, uid: int, gid: int) -> str:
    """Sandbox ids -> host ids for a launcher started as ``uid``, as ``inspect`` shows them."""
    if params.backend == "host":
        return "none (a host process)"
    if params.backend == "libkrun":
        return "the VM's own"
    if params.id_shift is not None:
        u, g = params.id_shift.uid_base, params.id_shift.gid_base
        gids = "" if g == u else f" (gids -> {g}-{g + ROOT_ID_RANGE - 1})"
        return f"0-{ROOT_ID_RANGE - 1} -> {u}-{u + ROOT_ID_RANGE - 1}{gids}"
    if uid == 0:
        return f"0-{ROOT_ID_RANGE - 1} -> 0-{ROOT_ID_RANGE - 1} (host ids)"
    wide = user_maps(uid, gid)
    if wide is None:
        return f"0 -> {uid}"
    return f"0 -> {uid}, 1-{wide.count} -> {wide.uid_start}-{wide.uid_start + wide.count - 1}"


def remove_as_mapped_root(path: str) -> None:
    """``rm -rf path`` as root of a user namespace with our maps: a non-root daemon cannot
    delete what a sandbox made under its subordinate ids itself (as ``podman unshare rm``)."""
    unshare_with_id_map(sc.CLONE_NEWUSER)
    remove_tree_here(path)


def main(argv: list[str]) -> int:
    """``python -m vmm_ffi.isolation.userns remove PATH``: see ``remove_as_mapped_root``."""
    if len(argv) != 2 or argv[0] != "remove":
        print("usage: python -m vmm_ffi.isolation.userns remove PATH", file=sys.stderr)
        return 2
    try:
        sc.load()
        remove_as_mapped_root(argv[1])
    except (OSError, SetupFailed) as exc:
        print(f"error: removing {argv[1]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
