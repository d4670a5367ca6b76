"""Setup and install scripts that change what the image shipped (SPEC §7): the seed's own setup
line with the real Debian registry, deletes of image directories, and scripts that break the
sandbox (a full disk, a deleted /bin/sh, a deleted /workspace)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, kill_sandboxes
from tests.support.projects import make_shell_project
from tests.support.wait import wait_until
from vmm_ffi.network.helper import tun_problem

SEED_SETUP = "apt-get update && apt-get install -y build-essential"
APT_TIMEOUT_S = 900.0


def logs(daemon: DaemonProcess, name: str) -> str:
    return daemon.iii("worker", "logs", name, "--tail", "400").stdout


def test_seed_setup_line_installs_build_essential(daemon_factory, python_image: str,
                                                  tmp_path: Path) -> None:
    project = make_shell_project(tmp_path, python_image, "builder", setup=SEED_SETUP,
                                 start="cc --version | head -n1; exec sleep 1000")
    daemon = daemon_factory()
    added = daemon.iii("worker", "add", str(project), timeout=APT_TIMEOUT_S)
    assert added.returncode == 0, added.stderr + logs(daemon, "builder")[-3000:]
    assert daemon.json("worker", "start", "builder")["status"] == "running"
    wait_until(lambda: "cc (Debian" in logs(daemon, "builder"), 30, "cc --version")
    assert daemon.json("worker", "stop", "builder")["status"] == "stopped"

    again = daemon.iii("worker", "start", "builder")
    assert again.returncode == 0, again.stderr
    assert "skipping setup and install" in again.stdout + again.stderr
    wait_until(lambda: logs(daemon, "builder").count("cc (Debian") == 2, 30,
               "cc --version after a start that skipped setup")


def test_setup_deletes_and_replaces_image_directories(daemon_factory, python_image: str,
                                                      tmp_path: Path) -> None:
    setup = ("rm -rf /usr/share/doc && mv /usr/share/common-licenses /opt/licenses && "
             "mkdir /usr/share/common-licenses && echo mine > /usr/share/common-licenses/MINE")
    project = make_shell_project(
        tmp_path, python_image, "pruner", setup=setup,
        start="echo doc=$(ls -A /usr/share/doc 2>&1 | wc -l) "
              "licenses=$(ls /usr/share/common-licenses) moved=$(ls /opt/licenses | wc -l); "
              "exec sleep 1000")
    daemon = daemon_factory()
    added = daemon.iii("worker", "add", str(project))
    assert added.returncode == 0, added.stderr
    assert daemon.json("worker", "start", "pruner")["status"] == "running"
    wait_until(lambda: "licenses=MINE" in logs(daemon, "pruner"), 30, "the start script")
    line = next(x for x in logs(daemon, "pruner").splitlines() if "licenses=MINE" in x)
    assert "doc=1" in line  # `ls` of a missing dir: one line of error, no entries
    assert int(line.split("moved=")[1]) > 10, line


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return result.stderr


def test_setup_that_removes_bin_sh_fails_the_add_and_force_recovers(
        daemon_factory, busybox_image: str, iii_home: Path, tmp_path: Path) -> None:
    project = make_shell_project(tmp_path, busybox_image, "nosh", setup="rm /bin/sh",
                                 start="echo started; exec sleep 1000")
    daemon = daemon_factory()
    failed = one_error_line(daemon.iii("worker", "add", str(project)))
    assert "setup script failed with exit code 127" in failed
    assert "no /bin/sh any more" in failed and "iii worker add --force" in failed
    assert not (iii_home / "config.yaml").exists() or \
        "nosh" not in (iii_home / "config.yaml").read_text()
    assert not (iii_home / "managed/nosh/upper/var/.iii-prepared").exists()

    manifest = project / "iii.worker.yaml"
    manifest.write_text(manifest.read_text().replace("rm /bin/sh", ""))
    assert daemon.iii("worker", "add", str(project), "--force").returncode == 0
    assert daemon.json("worker", "start", "nosh")["status"] == "running"
    wait_until(lambda: "started" in logs(daemon, "nosh"), 10, "the worker's output")


def test_install_that_deletes_workspace_is_a_clear_error(daemon_factory, busybox_image: str,
                                                         iii_home: Path, tmp_path: Path) -> None:
    project = make_shell_project(tmp_path, busybox_image, "selfdel", install="rm -rf /workspace",
                                 start="exec sleep 1000")
    daemon = daemon_factory()
    failed = one_error_line(daemon.iii("worker", "add", str(project)))
    assert "install script deleted /workspace" in failed
    assert not (iii_home / "managed/selfdel/upper/var/.iii-prepared").exists()


@pytest.fixture
def small_home(iii_home: Path) -> Iterator[Path]:
    """An III_HOME on a 16 MiB tmpfs (root only): room for the busybox image, little more."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as III_HOME needs root (CI runs as root)")
    home = iii_home / "small"
    home.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs",
                              str(home)], check=False, capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield home
    finally:
        kill_sandboxes(home)
        if subprocess.run(["umount", str(home)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(home)], check=True)


def test_setup_that_fills_the_disk(small_home: Path, busybox_image: str,
                                   tmp_path: Path) -> None:
    project = make_shell_project(tmp_path, busybox_image, "filler",
                                 setup="dd if=/dev/zero of=/fill bs=1M count=64",
                                 start="exec sleep 1000")
    daemon = DaemonProcess(small_home).start()
    try:
        failed = one_error_line(daemon.iii("worker", "add", str(project)))
        assert "setup script failed with exit code 1" in failed
        assert "No space left on device" in failed
        assert f"the disk holding the sandbox {small_home}/managed/filler is full" in failed
        assert not (small_home / "managed/filler/upper/var/.iii-prepared").exists()
        assert not (small_home / "config.yaml").exists() or \
            "filler" not in (small_home / "config.yaml").read_text()
        assert daemon.iii("daemon", "status").returncode == 0
    finally:
        daemon.stop()


@pytest.mark.skipif(tun_problem() is not None, reason="this user cannot run pasta at all here")
def test_a_host_without_pasta_says_how_to_fix_it(daemon_factory, busybox_image: str,
                                                 iii_home: Path, tmp_path: Path) -> None:
    project = make_shell_project(tmp_path, busybox_image, "offline", start="exec sleep 1000")
    daemon = daemon_factory(III_PASTA=str(tmp_path / "no-pasta"),  # and not the root's bridge
                            III_SLIRP4NETNS=str(tmp_path / "no-slirp4netns"),
                            III_NETWORK_BACKEND="pasta")
    failed = one_error_line(daemon.iii("worker", "add", str(project)))
    assert "pasta is not installed (nor slirp4netns)" in failed
    assert "apt-get install passt" in failed and "network: host" in failed
    assert not (iii_home / "config.yaml").exists() or \
        "offline" not in (iii_home / "config.yaml").read_text()


def test_network_host_is_an_explicit_warned_opt_out(daemon_factory, busybox_image: str,
                                                    iii_home: Path, tmp_path: Path) -> None:
    (iii_home / "daemon.yaml").write_text("network: host\n")
    project = make_shell_project(tmp_path, busybox_image, "shared",
                                 start="echo ns=$(readlink /proc/self/ns/net); exec sleep 1000")
    daemon = daemon_factory(III_PASTA=str(tmp_path / "no-pasta"))
    added = daemon.iii("worker", "add", str(project))
    assert added.returncode == 0, added.stderr
    assert "network: host" in added.stderr + added.stdout
    assert daemon.iii("worker", "start", "shared").returncode == 0
    host_ns = os.readlink("/proc/self/ns/net")
    wait_until(lambda: f"ns={host_ns}" in logs(daemon, "shared"), 10, "the worker's output")
