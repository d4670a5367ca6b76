"""An image's USER resolved against its own /etc/passwd and /etc/group (issue 19): names, uids,
``user:group`` forms, supplementary groups, and one-line errors for what the image lacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.errors import InvalidArgument
from daemon.workers.launching.image_user import resolve_user
from vmm_ffi.params import RunAs

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1001:\nstaff:x:50:app,other\nwheel:x:10:root\n"


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return tmp_path


@pytest.mark.parametrize(
    ("user", "expected"),
    [("", None), ("root", RunAs(uid=0, gid=0, groups=[10])),
     ("0", RunAs(uid=0, gid=0, groups=[10])), ("0:0", RunAs(uid=0, gid=0, groups=[10])),
     ("4242:0", RunAs(uid=4242, gid=0, groups=[])),
     ("app", RunAs(uid=1000, gid=1001, groups=[50])),
     ("1000", RunAs(uid=1000, gid=1001, groups=[50])),
     ("app:staff", RunAs(uid=1000, gid=50, groups=[])),
     ("app:7", RunAs(uid=1000, gid=7, groups=[50])),
     ("4242", RunAs(uid=4242, gid=0, groups=[])),
     ("4242:4243", RunAs(uid=4242, gid=4243, groups=[])),
     ("root:wheel", RunAs(uid=0, gid=10, groups=[]))],
    ids=["empty", "root-name", "root-uid", "root-uid-gid", "uid-gid0", "name", "uid-in-passwd",
         "name-group", "name-gid", "unknown-uid", "uid-gid", "root-group"],
)
def test_user_forms(rootfs: Path, user: str, expected: RunAs | None) -> None:
    assert resolve_user(user, rootfs, "img") == expected


@pytest.mark.parametrize(
    ("user", "message"),
    [("nobody", "no user 'nobody' in the image's /etc/passwd"),
     ("app:nogroup", "no group 'nogroup' in the image's /etc/group"),
     ("70000", "ids above 65535")],
    ids=["unknown-name", "unknown-group", "too-big"],
)
def test_user_errors_name_the_image_and_the_gap(rootfs: Path, user: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        resolve_user(user, rootfs, "reg/img:1")
    assert message in info.value.message and "reg/img:1" in info.value.message
    assert "\n" not in info.value.message


def test_a_passwd_symlink_out_of_the_root_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "host-passwd"
    outside.write_text("app:x:1:1::/:/bin/sh\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").symlink_to(outside)
    with pytest.raises(InvalidArgument, match="no user 'app'"):
        resolve_user("app", root, "img")
