"""Fault injection against image pulls through the real daemon process and the real CLI (issue 6):
kill -9 of the daemon mid-pull, a disk that fills up during extraction, and a registry that dies
in the middle of a blob. Each test states what must hold afterwards and checks it; library-level
variants of these live in ``tests/daemon/images/``."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.images.registry import ATTEMPTS
from tests.faults.conftest import complete_looking, temp_dirs
from tests.support.daemon import III_CLI, DaemonProcess
from tests.support.images import Blob, TarEntry, layer_blob, push_image
from tests.support.registry import FaultProxy, RegistryServer
from tests.support.wait import wait_until

BIG_LAYER_BYTES = 14 << 20  # three of them: ~42 MB of incompressible data
PULL_START_TIMEOUT_S = 60.0
CLI_EXIT_TIMEOUT_S = 30.0
SMALL_FS = "8m"


def random_layers(tag: str, count: int, size: int) -> tuple[list[Blob], dict[str, str]]:
    """``count`` layers, each one random file (incompressible) then a marker written after it.

    Returns the blobs and ``{path in the rootfs: sha256}`` of every random file, so a test can
    prove that what was cached is byte for byte what was pushed.
    """
    layers, digests = [], {}
    for i in range(count):
        data = os.urandom(size)
        path = f"data/{tag}-{i}.bin"
        digests[path] = hashlib.sha256(data).hexdigest()
        entries = [TarEntry("data", "dir", mode=0o755), TarEntry(path, data=data),
                   TarEntry("etc", "dir", mode=0o755), TarEntry(f"etc/{tag}-layer-{i}", data=b"ok")]
        # Mixed compression on purpose: one gzip stream, the rest plain tar.
        layers.append(layer_blob(entries, "gzip" if i == 0 else "none"))
    return layers, digests


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def assert_one_error_line(result: subprocess.CompletedProcess[str], ref: str, *needles: str) -> str:
    print("CLI stderr:", result.stderr)  # shown by pytest only when the test fails
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error:"), result.stderr
    # The whole error is one line (a hint line may follow, but never a second error).
    assert sum(1 for line in lines if line.startswith("error:")) == 1, result.stderr
    assert ref in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def cache_state(home: Path) -> list[str]:
    """What a reader of the cache sees: every entry of rootfs/ except the flock files."""
    rootfs = home / "rootfs"
    return sorted(p.name for p in rootfs.iterdir() if not p.name.endswith(".lock"))


# ------------------------------------------------------------------- 1. kill -9 mid-pull


def test_kill9_during_pull_leaves_no_half_cache_and_restart_pulls_cleanly(
        daemon_factory: Any, registry: RegistryServer, fault_proxy: FaultProxy,
        iii_home: Path) -> None:
    """kill -9 while layer 3 is mid-download and layers 1-2 are already extracted.

    Must hold: nothing complete-looking in rootfs/; after a restart the dead pull's temp dir is
    gone, the same pull succeeds with every byte intact, and the image is listed exactly once.
    """
    layers, digests = random_layers("big", 3, BIG_LAYER_BYTES)
    push_image(registry.access, "iii-faults/big", "latest", layers)
    ref = f"{fault_proxy.host}/iii-faults/big:latest"
    # Deterministic instead of racing a fast loopback: the proxy stalls the last blob halfway.
    fault_proxy.hold(layers[2].digest)
    daemon: DaemonProcess = daemon_factory()

    pull = subprocess.Popen([III_CLI, "image", "pull", ref], env=daemon.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        work = wait_until(lambda: list((iii_home / "rootfs").glob(".tmp-*/root/etc/big-layer-1")),
                          PULL_START_TIMEOUT_S, "layers 1-2 extracted in the pull's temp dir")
        wait_until(fault_proxy.holding.is_set, PULL_START_TIMEOUT_S, "layer 3 mid-download")
        daemon.kill9()
        _out, err = pull.communicate(timeout=CLI_EXIT_TIMEOUT_S)
    finally:
        if pull.poll() is None:
            pull.kill()
            pull.wait()
    fault_proxy.release()

    # The client got a clear error, not a hang or a traceback.
    print("killed pull stderr:", err)
    assert pull.returncode != 0
    assert err.startswith("error:") and "Traceback" not in err, err
    # The kill really hit a pull in progress, and left nothing that looks like an image.
    assert work[0].exists()
    assert temp_dirs(iii_home), "the dead pull's temp dir should still be there before restart"
    assert complete_looking(iii_home) == []

    daemon.start()
    assert temp_dirs(iii_home) == [], "a restarted daemon removes interrupted pulls"
    assert complete_looking(iii_home) == []

    result = daemon.json("image", "pull", ref)
    image = Path(result["path"])
    assert complete_looking(iii_home) == [result["slug"]]
    assert temp_dirs(iii_home) == []
    for path, sha in digests.items():  # data lost = 0
        assert file_sha256(image / path) == sha, path
    listed = [i for i in daemon.json("image", "list")["images"] if i["ref"] == result["ref"]]
    assert len(listed) == 1 and listed[0]["digest"] == result["digest"]
    assert fault_proxy.faults_injected == 1


# ------------------------------------------------------------------- 2. disk full


@pytest.fixture
def small_fs_daemon(iii_home: Path) -> Iterator[DaemonProcess]:
    """A daemon whose III_HOME is an 8 MiB tmpfs (root only); stopped, then unmounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as III_HOME needs root (CI runs as root)")
    mount = iii_home / "fs"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS},mode=0700",
                              "tmpfs", str(mount)], check=False, capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    daemon = DaemonProcess(mount)
    try:
        yield daemon.start()
    finally:
        daemon.stop()
        print("---- daemon log ----\n" + daemon.log[-4000:])
        if subprocess.run(["umount", str(mount)], check=False, capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)


def test_disk_full_during_extraction_is_one_clear_error_and_nothing_is_left(
        small_fs_daemon: DaemonProcess, registry: RegistryServer, busybox_image: str) -> None:
    """A 24 MiB file (a ~24 KiB gzip blob) extracted onto an 8 MiB III_HOME.

    Must hold: exit 1 with one ``error:`` line naming the image and the cause, no traceback;
    nothing complete-looking and no temp dir left; the space is given back; the daemon still
    answers and can pull an image that fits.
    """
    home = small_fs_daemon.home
    zeros = layer_blob([TarEntry("big", "dir", mode=0o755),
                        TarEntry("big/zeros", data=bytes(24 << 20))])
    assert zeros.size < 1 << 20  # the download fits; only the extraction does not
    push_image(registry.access, "iii-faults/diskfull", "latest", [zeros])
    ref = f"{registry.host}/iii-faults/diskfull:latest"
    free_before = os.statvfs(home).f_bfree

    result = small_fs_daemon.iii("image", "pull", ref)

    assert_one_error_line(result, ref, "No space left on device", "free space under $III_HOME")
    assert complete_looking(home) == []
    assert temp_dirs(home) == []
    # The partial extraction was removed (allow a little for logs written meanwhile).
    assert os.statvfs(home).f_bfree >= free_before - 64
    assert small_fs_daemon.iii("daemon", "status").returncode == 0
    pulled = small_fs_daemon.json("image", "pull", busybox_image)
    assert complete_looking(home) == [pulled["slug"]]


# ------------------------------------------------------------------- 3. registry dies mid-blob


def test_registry_dying_mid_blob_is_a_clear_error_and_the_cache_is_unchanged(
        daemon_factory: Any, registry: RegistryServer, fault_proxy: FaultProxy,
        busybox_image: str, iii_home: Path) -> None:
    """Every GET of one layer blob gets its headers and half the body, then the connection drops.

    Must hold: the client retried (``ATTEMPTS`` GETs of that blob), then the CLI exits 1 with one
    error line naming the image; the cache (an image pulled before) is exactly as it was; once
    the registry is healthy the same pull succeeds with every byte intact.
    """
    layers, digests = random_layers("mid", 2, 2 << 20)
    push_image(registry.access, "iii-faults/midblob", "latest", layers)
    ref = f"{fault_proxy.host}/iii-faults/midblob:latest"
    daemon: DaemonProcess = daemon_factory()
    kept = daemon.json("image", "pull", busybox_image)
    before = cache_state(iii_home)
    fault_proxy.cut(layers[1].digest, times=ATTEMPTS + 5)

    result = daemon.iii("image", "pull", ref)

    line = assert_one_error_line(result, ref)
    assert "layer 2/2" in line and "dropped mid-transfer (after 3 attempts)" in line, line
    assert fault_proxy.seen(f"/blobs/{layers[1].digest}") == ATTEMPTS
    assert fault_proxy.faults_injected == ATTEMPTS
    assert cache_state(iii_home) == before
    assert complete_looking(iii_home) == [kept["slug"]]
    assert [i["digest"] for i in daemon.json("image", "list")["images"]] == [kept["digest"]]

    fault_proxy.heal()
    pulled = daemon.json("image", "pull", ref)
    for path, sha in digests.items():
        assert file_sha256(Path(pulled["path"]) / path) == sha, path
    assert complete_looking(iii_home) == sorted([kept["slug"], pulled["slug"]])
    assert temp_dirs(iii_home) == []
