"""The subordinate id range a root daemon runs namespace sandboxes on (SPEC §8, "ids").

Like docker's ``userns-remap`` (its ``dockremap`` user), the range belongs to a dedicated system
user, ``iii-sandbox``, in ``/etc/subuid`` and ``/etc/subgid``: an entry that exists is used as it
is; a missing one is appended at the first multiple of 65536 past every range already given out
(and past 100000), so no other user's containers share it. Both files are changed atomically
under an flock. The user itself is created with ``useradd --system`` when absent, so the entry
names a real account (best effort: the range is what matters to the kernel).
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import subprocess
from pathlib import Path

from daemon.errors import Unavailable
from vmm_ffi.params import IdShift

log = logging.getLogger(__name__)

SANDBOX_USER = "iii-sandbox"
ID_RANGE = 65536
FIRST_ID = 100_000
SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")
USERADD_TIMEOUT_S = 30.0


def parse_ranges(text: str) -> list[tuple[str, int, int]]:
    """``name:start:count`` lines (comments and malformed lines skipped)."""
    ranges = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and not parts[0].startswith("#") and parts[1].isdigit() \
                and parts[2].isdigit():
            ranges.append((parts[0], int(parts[1]), int(parts[2])))
    return ranges


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _entry(text: str, user: str) -> int | None:
    return next((start for name, start, count in parse_ranges(text)
                 if name == user and count >= ID_RANGE), None)


def _free_start(*texts: str) -> int:
    end = max([FIRST_ID] + [start + count for text in texts
                            for _, start, count in parse_ranges(text)])
    return -(-end // ID_RANGE) * ID_RANGE


def _append(path: Path, text: str, line: str) -> None:
    tmp = path.with_name(f".{path.name}.iii-tmp")
    body = text if not text or text.endswith("\n") else text + "\n"
    with open(tmp, "w") as f:
        f.write(body + line + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def read_subordinate_range(user: str = SANDBOX_USER, subuid: Path = SUBUID,
                           subgid: Path = SUBGID) -> IdShift | None:
    """``user``'s range when both files have it (nothing is written)."""
    uid_base, gid_base = _entry(_read(subuid), user), _entry(_read(subgid), user)
    if uid_base is None or gid_base is None:
        return None
    return IdShift(uid_base=uid_base, gid_base=gid_base)


def ensure_subordinate_range(user: str = SANDBOX_USER, subuid: Path = SUBUID,
                             subgid: Path = SUBGID) -> IdShift:
    """``user``'s range in both files, appended when missing; raises ``Unavailable``."""
    try:
        with open(subuid.with_name(f".{subuid.name}.iii-lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            uids, gids = _read(subuid), _read(subgid)
            uid_base, gid_base = _entry(uids, user), _entry(gids, user)
            if uid_base is None or gid_base is None:
                start = _free_start(uids, gids)
                if uid_base is None:
                    _append(subuid, uids, f"{user}:{start}:{ID_RANGE}")
                    uid_base = start
                if gid_base is None:
                    _append(subgid, gids, f"{user}:{start}:{ID_RANGE}")
                    gid_base = start
                log.info("sandbox ids: %s gets %d-%d in %s and %s", user, start,
                         start + ID_RANGE - 1, subuid, subgid)
    except OSError as exc:
        raise Unavailable(f"cannot set up the sandboxes' subordinate ids in {subuid}: {exc}",
                          f"give the daemon write access to {subuid} and {subgid}, or add a "
                          f"line `{user}:<start>:{ID_RANGE}` to each") from exc
    return IdShift(uid_base=uid_base, gid_base=gid_base)


def ensure_user(user: str = SANDBOX_USER) -> None:
    """Create ``user`` as a system account without a home or shell when it does not exist."""
    try:
        pwd.getpwnam(user)
        return
    except KeyError:
        pass
    try:
        proc = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir",
                               "/nonexistent", "--shell", "/usr/sbin/nologin", user],
                              check=False, capture_output=True, text=True,
                              timeout=USERADD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("sandbox ids: could not create the user %s: %s", user, exc)
        return
    if proc.returncode not in (0, 9):  # 9: it exists (created meanwhile)
        log.warning("sandbox ids: could not create the user %s: %s", user,
                    proc.stderr.strip())
