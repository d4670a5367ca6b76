"""No host root in a sandbox (vmm_ffi.isolation.idmap): a root launcher with ``id_shift`` runs
the sandbox as a subordinate range while files keep their sandbox owners on disk, through
idmapped mounts."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.wait import wait_until
from tests.vmm_ffi.conftest import Sandboxes, workload_lines
from vmm_ffi.params import IdShift

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="id shifting is for root launchers")
SHIFT = IdShift(uid_base=3_000_000, gid_base=3_100_000)


def test_sandbox_root_is_a_subordinate_id_on_the_host(sandboxes: Sandboxes) -> None:
    script = ("cat /proc/self/uid_map /proc/self/gid_map; id -u; ls -ln /bin/busybox; "
              "echo made > /made && chown 5:6 /made && echo chowned; "
              "touch /far && chown 70000 /far || echo refused; echo probed; exec sleep 1000")
    params = sandboxes.params(["sh", "-c", script], id_shift=SHIFT)
    result = sandboxes.spawn(params)
    wait_until(lambda: "probed" in sandboxes.log(params) or
               "ended" in sandboxes.log(params), 10, "the script's output")
    log = sandboxes.log(params)
    lines = workload_lines(log)
    assert lines[0].split() == ["0", "3000000", "65536"], log
    assert lines[1].split() == ["0", "3100000", "65536"]
    assert lines[2] == "0"
    assert lines[3].split()[2:4] == ["0", "0"]  # the image's files: owned by sandbox root
    assert "chowned" in lines and "refused" in lines  # outside the range: fails cleanly
    # Seen from the host: the workload is not root; files keep sandbox owners on disk.
    workload = _children(result.sandbox_pid)[0]
    uid_line = next(x for x in Path(f"/proc/{workload}/status").read_text().splitlines()
                    if x.startswith("Uid:"))
    assert uid_line.split()[1:] == ["3000000"] * 4
    made = Path(params.rootfs.upper) / "made"  # type: ignore[union-attr]
    assert (made.stat().st_uid, made.stat().st_gid) == (5, 6)
    os.kill(result.pid, 15)
    sandboxes.wait(result, params)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def test_exit_is_recorded_by_the_host_side_helper(sandboxes: Sandboxes) -> None:
    # The launcher runs on shifted ids once the sandbox exists; exit.json still appears.
    code, status, log = sandboxes.run(["sh", "-c", "exit 7"], id_shift=SHIFT)
    assert (code, status.exit_code) == (7, 7), log



@pytest.fixture
def ramfs(tmp_path: Path) -> Iterator[Path]:
    """A ramfs: a file system that refuses idmapped mounts (no FS_ALLOW_IDMAP, Linux 6.18)."""
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "-o", "mode=0755", "iii-test", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_where_idmapped_mounts_are_refused_a_shifted_copy_is_used(ramfs: Path,
                                                                   busybox_lower: Path) -> None:
    cache = ramfs / "rootfs"
    cache.mkdir()
    lower = cache / "busybox"
    subprocess.run(["cp", "-a", str(busybox_lower), str(lower)], check=True)
    factory = Sandboxes(ramfs / "sandboxes", lower)
    try:
        script = ("id -u; ls -ln /bin/busybox; echo made > /made && chown 5:6 /made && "
                  "echo chowned; touch /far && chown 70000 /far || echo refused")
        params = factory.params(["sh", "-c", script], id_shift=SHIFT)
        result = factory.spawn(params)
        assert result.id_map.startswith("0-65535 -> 3000000-3065535")
        assert "shifted copies: idmapped mounts refused" in result.id_map
        code, status = factory.wait(result, params)
        log = Path(params.log_path).read_text()
        assert (code, status.exit_code) == (0, 0), log
        lines = workload_lines(log)
        assert lines[0] == "0" and lines[1].split()[2:4] == ["0", "0"], log  # the image's owner
        assert "chowned" in lines and "refused" in lines
        copies = [p.name for p in cache.iterdir() if p.name.startswith(".shifted-")
                  and p.is_dir()]
        assert copies == [f".shifted-3000000-3100000-{lower.stat().st_ino}-busybox"]
        busybox = (cache / copies[0] / "bin/busybox").stat()
        assert (busybox.st_uid, busybox.st_gid) == (3_000_000, 3_100_000)  # shifted on disk
        assert lower.joinpath("bin/busybox").stat().st_uid == 0  # the cache entry is untouched
        made = Path(params.rootfs.upper) / "made"  # type: ignore[union-attr]
        assert (made.stat().st_uid, made.stat().st_gid) == (3_000_005, 3_100_006)
        # a second sandbox reuses the copy: made once per cache entry (and range)
        mtime = (cache / copies[0]).stat().st_mtime_ns
        again = factory.params(["true"], id_shift=SHIFT)
        assert factory.wait(factory.spawn(again), again)[0] == 0
        assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == \
            sorted([copies[0], "busybox"])
        assert (cache / copies[0]).stat().st_mtime_ns == mtime
    finally:
        factory.close()
