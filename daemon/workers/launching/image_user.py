"""An image's ``USER`` as the uid/gid/groups a container worker runs as (the OCI image spec's
``config.User``, resolved as docker and runc do).

``name``, ``uid``, ``name:group``, ``uid:gid`` (and the mixed forms): a name is looked up in the
image's ``/etc/passwd`` (its primary group is the default gid), a group name in ``/etc/group``;
a numeric uid that the passwd file does not list runs with gid 0; the supplementary groups are
the ``/etc/group`` entries that list the user. Files are read beneath the image root (no symlink
leaves it).
"""

from __future__ import annotations

from pathlib import Path

from daemon.errors import InvalidArgument
from daemon.sandboxes.beneath import read_file_beneath
from vmm_ffi.params import RunAs

MAX_ID = 65535  # the sandbox's user namespace maps 0..65535


def _rows(rootfs: Path, relpath: str) -> list[list[str]]:
    data = read_file_beneath(rootfs, relpath)
    if data is None:
        return []
    return [line.split(":") for line in data.decode("utf-8", "replace").splitlines()
            if line and not line.startswith("#")]


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def resolve_user(user: str, rootfs: Path, image: str) -> RunAs | None:
    """The ``RunAs`` for ``user`` (None: empty or root, i.e. sandbox root). Blocking (reads two
    small files). Raises ``InvalidArgument`` naming the image and what is missing."""
    user = user.strip()
    if not user:
        return None
    name, _, group = user.partition(":")
    passwd = [r for r in _rows(rootfs, "etc/passwd") if len(r) >= 4]
    groups = [r for r in _rows(rootfs, "etc/group") if len(r) >= 3]
    uid = _number(name)
    row = next((r for r in passwd if (r[0] == name if uid is None else _number(r[2]) == uid)),
               None)
    if uid is None:
        if row is None or _number(row[2]) is None:
            raise InvalidArgument(f"image {image}: USER {user!r}: no user {name!r} in the "
                                  "image's /etc/passwd; use a uid or fix the image")
        uid = int(row[2])
    gid = _number(row[3]) if row is not None else 0
    if group:
        gid = _number(group)
        if gid is None:
            match = next((r for r in groups if r[0] == group and _number(r[2]) is not None),
                         None)
            if match is None:
                raise InvalidArgument(f"image {image}: USER {user!r}: no group {group!r} in the "
                                      "image's /etc/group; use a gid or fix the image")
            gid = int(match[2])
    gid = gid or 0
    login = row[0] if row is not None else None
    extra = sorted({int(r[2]) for r in groups if _number(r[2]) is not None
                    and login in (r[3] if len(r) > 3 else "").split(",")} - {gid}) \
        if login else []
    if max([uid, gid, *extra]) > MAX_ID:
        raise InvalidArgument(f"image {image}: USER {user!r}: ids above {MAX_ID} cannot be "
                              "mapped into the sandbox")
    if uid == 0 and gid == 0 and not extra:
        return None
    return RunAs(uid=uid, gid=gid, groups=extra)
