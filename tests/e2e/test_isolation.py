"""What a namespace sandbox started by a root daemon isolates (SPEC §8): no host root, its own
network stack; the workload still owns the image's files as its root."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from daemon.sandboxes.subids import SANDBOX_USER, SUBUID, parse_ranges
from tests.support.projects import make_shell_project
from tests.support.wait import wait_until
from vmm_ffi.network.helper import find_slirp4netns, tun_problem


def host_uid(pid: int) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                if x.startswith("Uid:"))
    return int(line.split()[1])


def proc_state(pid: str) -> str:
    """``R``, ``S``, ``Z``... of a process, or ``gone`` (a zombie has ended: only reaping is left)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


@pytest.mark.skipif(os.geteuid() != 0, reason="the id shift is what a root daemon does")
def test_root_daemon_sandbox_runs_on_subordinate_ids(daemon_factory, busybox_image: str,
                                                     iii_home: Path, tmp_path: Path) -> None:
    script = ("echo uid=$(id -u) owner=$(stat -c %u /bin/busybox) "
              "net=$(readlink /proc/self/ns/net); echo mine > /workspace/made; exec sleep 1000")
    project = make_shell_project(tmp_path, busybox_image, "shifted", start=script)
    daemon = daemon_factory()
    assert daemon.iii("worker", "add", str(project)).returncode == 0
    started = daemon.json("worker", "start", "shifted")
    wait_until(lambda: "uid=" in daemon.iii("worker", "logs", "shifted").stdout, 10, "output")
    line = next(x for x in daemon.iii("worker", "logs", "shifted").stdout.splitlines()
                if x.startswith("uid="))
    assert line.startswith("uid=0 owner=0 ")  # root of its own namespace, owning the image
    assert f"net={os.readlink('/proc/self/ns/net')}" not in line
    base = next(start for name, start, _ in parse_ranges(SUBUID.read_text())
                if name == SANDBOX_USER)
    assert host_uid(started["pid"]) == base  # the launcher, and everything under it
    detail = daemon.json("worker", "inspect", "shifted")["isolation_detail"]
    assert detail["backend"] == "namespace"
    # a root daemon's default: the bridge, no helper process
    assert detail["network"].startswith("own network namespace (bridge, no helper process); "
                                        "policy egress (")
    assert detail["id_map"] == f"0-65535 -> {base}-{base + 65535}"
    assert detail["limits"].startswith(("enforced", "not enforced: "))
    assert detail["no_new_privs"] is True and detail["seccomp"] == "iii-default/1"
    daemon.kill9()  # the block comes from the launcher's record: it survives a restart
    daemon.start()
    assert daemon.json("worker", "inspect", "shifted")["isolation_detail"] == detail
    shown = daemon.iii("worker", "inspect", "shifted").stdout
    assert "own network namespace (bridge" in shown and f"-> {base}-" in shown
    host = daemon.json("daemon", "status")["isolation"]["host"]
    assert host["network"].startswith("own network namespace on the bridge iii-")
    assert host["ids"] == f"subordinate range {base}-{base + 65535} ({SANDBOX_USER} in {SUBUID})"
    assert host["cgroups"].startswith("cgroup v")
    made = iii_home / "managed/shifted/upper/workspace/made"
    wait_until(made.exists, 10, "the worker's file")
    assert made.stat().st_uid == 0  # on disk: the sandbox's owner, through the idmapped mount
    stopped = daemon.json("worker", "stop", "shifted")
    assert stopped["status"] == "stopped" and stopped["last_exit_code"] == 143
    removed = daemon.json("worker", "remove", "shifted")
    assert removed["removed"] is True and not (iii_home / "managed/shifted").exists()


@pytest.mark.skipif(find_slirp4netns() is None or tun_problem() is not None,
                    reason="slirp4netns (Makefile APT_PACKAGES) missing, or /dev/net/tun not ours")
def test_without_pasta_slirp4netns_gives_the_same_network(daemon_factory, busybox_image: str,
                                                           iii_home: Path,
                                                           tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))  # a host loopback service, allowed
    port = server.getsockname()[1]
    (iii_home / "daemon.yaml").write_text(f"network:\n  allow: [127.0.0.1:{port}]\n")
    try:
        script = (f"echo net=$(readlink /proc/self/ns/net); nc -w 3 127.0.0.1 {port} "
                  "&& echo reached; exec sleep 1000")
        project = make_shell_project(tmp_path, busybox_image, "slirp", start=script)
        daemon = daemon_factory(III_PASTA=str(tmp_path / "no-pasta"),  # pasta hidden
                                III_NETWORK_BACKEND="pasta")  # a root daemon: not the bridge
        host = daemon.json("daemon", "status")["isolation"]["host"]
        assert host["network"].startswith("own network namespace via ")
        assert "slirp4netns (pasta is not installed: the second choice)" in host["network"]
        assert daemon.iii("worker", "add", str(project)).returncode == 0
        started = daemon.json("worker", "start", "slirp")
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"hello\n")
        wait_until(lambda: "reached" in daemon.iii("worker", "logs", "slirp").stdout, 10,
                   "the host loopback service reached at 127.0.0.1")
        logs = daemon.iii("worker", "logs", "slirp").stdout
        assert f"net={os.readlink('/proc/self/ns/net')}" not in logs
        detail = daemon.json("worker", "inspect", "slirp")["isolation_detail"]
        assert detail["network"].startswith("own network namespace (slirp4netns); policy "
                                            "egress (")
        assert f"allow 127.0.0.1:{port}" in detail["network"]
        children = Path(f"/proc/{started['pid']}/task/{started['pid']}/children").read_text()
        helpers = [pid for pid in children.split()
                   if Path(f"/proc/{pid}/comm").read_text().strip() == "slirp4netns"]
        assert len(helpers) == 1  # the launcher's own child ...
        assert daemon.json("worker", "stop", "slirp")["status"] == "stopped"
        wait_until(lambda: proc_state(helpers[0]) in ("gone", "Z"), 10,
                   "slirp4netns to end with the sandbox")  # ... gone with it
    finally:
        server.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="the id shift is what a root daemon does")
def test_where_idmapped_mounts_are_refused_a_root_daemon_uses_a_shifted_copy(
        daemon_factory, busybox_image: str, iii_home: Path, tmp_path: Path) -> None:
    # III_HOME on a ramfs: a file system that refuses idmapped mounts (Linux 6.18)
    subprocess.run(["mount", "-t", "ramfs", "-o", "mode=0700", "iii-e2e", str(iii_home)],
                   check=True)
    try:
        script = ("echo uid=$(id -u) owner=$(stat -c %u /bin/busybox); "
                  "echo mine > /workspace/made; exec sleep 1000")
        project = make_shell_project(tmp_path, busybox_image, "copied", start=script)
        daemon = daemon_factory()
        assert daemon.iii("worker", "add", str(project)).returncode == 0
        daemon.json("worker", "start", "copied")
        wait_until(lambda: "uid=" in daemon.iii("worker", "logs", "copied").stdout, 10,
                   "output")
        assert "uid=0 owner=0" in daemon.iii("worker", "logs", "copied").stdout
        detail = daemon.json("worker", "inspect", "copied")["isolation_detail"]
        assert "(shifted copies: idmapped mounts refused (" in detail["id_map"]
        base = next(start for name, start, _ in parse_ranges(SUBUID.read_text())
                    if name == SANDBOX_USER)
        state = iii_home / "managed/copied"
        if (state / "root-mode").read_text().strip() == "overlay":
            # the image's shifted copy beside the cache entry is the lower
            copies = [p for p in (iii_home / "rootfs").iterdir()
                      if p.name.startswith(".shifted-") and p.is_dir()]
            assert len(copies) == 1 and (copies[0] / "bin/busybox").stat().st_uid == base
            made = state / "upper/workspace/made"
        else:  # ramfs has no overlay upper here: the sandbox's own copy is shifted in place
            assert (state / "rootfs/bin/busybox").stat().st_uid == base
            made = state / "rootfs/workspace/made"
        wait_until(made.exists, 10, "the worker's file")
        assert made.stat().st_uid == base  # the fallback's owners on disk: host ids of the range
        assert daemon.json("worker", "stop", "copied")["status"] == "stopped"
        assert daemon.json("worker", "remove", "copied")["removed"] is True
        assert not (iii_home / "managed/copied").exists()
        daemon.stop()  # before the ramfs goes: its log is there
    finally:
        subprocess.run(["umount", "-l", str(iii_home)], check=False)
