"""Export reads owners back through the launcher's user namespace, not as host ids.

Real files with real host owners (the tests run as root, so they can chown to any id), read by
the same walkers export uses.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.export.diff import diff_root
from daemon.export.owners import NOBODY, IdRange, SandboxOwners, sandbox_owners
from daemon.export.upper import read_upper
from daemon.sandboxes.subids import read_subordinate_range

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to other ids needs root")

DAEMON_UID = 1000
SUBUID_START = 231072  # what useradd gives a first user
# A non-root daemon: its uid is the sandbox's root, its subordinate range the sandbox's 1..65535.
UNPRIVILEGED = SandboxOwners((IdRange(0, DAEMON_UID, 1), IdRange(1, SUBUID_START, 65535)),
                             (IdRange(0, DAEMON_UID, 1), IdRange(1, SUBUID_START, 65535)),
                             keep_unmapped=False)
SHIFT_BASE = 655360
# A root daemon whose idmapped mounts were refused: the upper holds shifted host ids.
ROOT_SHIFTED = SandboxOwners((IdRange(0, SHIFT_BASE, 65536),), (IdRange(0, SHIFT_BASE, 65536),),
                             keep_unmapped=True)


def owned(path: Path, uid: int, gid: int) -> Path:
    path.write_text("x")
    os.chown(path, uid, gid)
    return path


@needs_root
def test_an_unprivileged_daemons_subordinate_owners_come_back_as_the_sandbox_saw_them(
        tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    owned(upper / "by-root", DAEMON_UID, DAEMON_UID)
    owned(upper / "by-node", SUBUID_START + 999, SUBUID_START + 999)  # the image's node user
    owned(upper / "by-stranger", 4242, 4242)  # not mapped into the sandbox at all

    found = {c.path: (c.uid, c.gid) for c in read_upper(upper, owners=UNPRIVILEGED)}

    assert found == {"by-root": (0, 0), "by-node": (1000, 1000), "by-stranger": (NOBODY, NOBODY)}


@needs_root
def test_a_root_daemons_shifted_owners_are_shifted_back_and_plain_ones_kept(
        tmp_path: Path) -> None:
    root, image = tmp_path / "root", tmp_path / "image"
    root.mkdir()
    image.mkdir()
    owned(root / "shifted", SHIFT_BASE + 33, SHIFT_BASE + 33)  # www-data, on the fallback path
    owned(root / "idmapped", 33, 33)  # the same user through an idmapped mount

    found = {c.path: (c.uid, c.gid) for c in diff_root(root, image, 0, owners=ROOT_SHIFTED)}

    assert found == {"shifted": (33, 33), "idmapped": (33, 33)}


def test_the_root_daemons_range_is_read_without_writing(tmp_path: Path) -> None:
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("alice:100000:65536\niii-sandbox:655360:65536\n")
    subgid.write_text("iii-sandbox:720896:65536\n")
    before = subuid.read_text(), subgid.read_text()

    shift = read_subordinate_range("iii-sandbox", subuid, subgid)

    assert shift is not None and (shift.uid_base, shift.gid_base) == (655360, 720896)
    assert read_subordinate_range("nobody-here", subuid, subgid) is None
    assert (subuid.read_text(), subgid.read_text()) == before


def test_this_daemons_map_sends_its_own_ids_to_the_sandboxs_root(tmp_path: Path) -> None:
    me = tmp_path / "mine"
    me.write_text("x")
    # root's own files are the sandbox root's (kept as they are); anyone else's uid is mapped to 0
    assert sandbox_owners().of(me.stat()) == (0, 0)
