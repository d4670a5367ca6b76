"""Who owns a file inside the sandbox, read from its owner on the host's disk.

The launcher's user namespace (``vmm_ffi.isolation.userns``) decides which host ids a sandbox's ids are,
and export must read that map backwards, or an image gets owners the sandbox never saw:

- a root daemon writes sandbox ids as they are (idmapped mounts) or, where the kernel refuses
  those, shifted into its ``iii-sandbox`` range (``vmm_ffi.isolation.idmap``'s fallback): both read back;
- any other user is the sandbox's root, and its subordinate range, where newuidmap maps it, is
  the sandbox's 1..count; any other host id shows in the sandbox as nobody, and so here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

NOBODY = 65534
SANDBOX_ID_RANGE = 65536


@dataclass(frozen=True)
class IdRange:
    """``count`` ids from ``host`` on the host are ``sandbox``… inside (one uid_map line)."""

    sandbox: int
    host: int
    count: int


@dataclass(frozen=True)
class SandboxOwners:
    uids: tuple[IdRange, ...]
    gids: tuple[IdRange, ...]
    keep_unmapped: bool  # root: an id outside every range is the sandbox's own id

    def of(self, st: os.stat_result) -> tuple[int, int]:
        return self._back(st.st_uid, self.uids), self._back(st.st_gid, self.gids)

    def _back(self, host: int, ranges: tuple[IdRange, ...]) -> int:
        for r in ranges:
            if r.host <= host < r.host + r.count:
                return r.sandbox + host - r.host
        return host if self.keep_unmapped else NOBODY


def sandbox_owners() -> SandboxOwners:
    """The map this daemon's launchers use (reads /etc/subuid and /etc/subgid)."""
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        from daemon.sandboxes.subids import read_subordinate_range

        shift = read_subordinate_range()
        if shift is None:
            return SandboxOwners((), (), keep_unmapped=True)
        return SandboxOwners((IdRange(0, shift.uid_base, SANDBOX_ID_RANGE),),
                             (IdRange(0, shift.gid_base, SANDBOX_ID_RANGE),), keep_unmapped=True)
    from vmm_ffi.isolation.userns import user_maps

    maps = user_maps(uid, gid)
    wide = () if maps is None else (IdRange(1, maps.uid_start, maps.count),)
    wide_gids = () if maps is None else (IdRange(1, maps.gid_start, maps.count),)
    return SandboxOwners((IdRange(0, uid, 1), *wide), (IdRange(0, gid, 1), *wide_gids),
                         keep_unmapped=False)
