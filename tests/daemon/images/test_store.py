"""ImageStore against the real registries of TESTING.md: pulls, cache behaviour, faults."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.errors import ImageError
from daemon.images import ExtractLimits, ImageStore, PullProgress, image_slug
from tests.daemon.images.conftest import StoreFactory, cache_listing
from tests.support.fixtures import AUTH_PASSWORD, AUTH_USER
from tests.support.images import (
    Blob,
    TarEntry,
    busybox_layers,
    config_blob,
    delete_manifest,
    layer_blob,
    push_image,
    push_index,
    registry_blob_path,
)
from tests.support.registry import RegistryServer
from tests.support.wait import wait_until


def unique_layer(tag: str, extra: list[TarEntry] | None = None, *, size: int = 4096,
                 compression: str = "gzip") -> Blob:
    """A layer no other test shares (blobs are content-addressed across repositories)."""
    return layer_blob([TarEntry("etc", "dir"), TarEntry("etc/which", data=tag.encode()),
                       TarEntry(f"noise-{tag}", data=os.urandom(size)), *(extra or [])],
                      compression)


def push(registry: RegistryServer, name: str, layers: list[Blob], *, config: Blob | None = None,
         docker: bool = False) -> str:
    push_image(registry.access, f"iii-test/{name}", "latest", layers, config, docker=docker)
    return f"{registry.host}/iii-test/{name}:latest"


async def assert_pull_fails(store: ImageStore, ref: str, message: str) -> ImageError:
    before = cache_listing(store)
    with pytest.raises(ImageError) as info:
        await store.pull(ref)
    text = str(info.value)
    assert text.startswith((f"image {ref}: ", f"image {ref}:latest: "))
    assert message in text
    assert "\n" not in text and "Traceback" not in text
    assert cache_listing(store) == before
    return info.value


# ------------------------------------------------------------------------------- pulling


async def test_pull_oci_image_caches_rootfs_and_config(make_store: StoreFactory,
                                                       busybox_image: str) -> None:
    store = make_store()
    image = await store.pull(busybox_image)
    assert image.ref == busybox_image
    assert image.slug == image_slug(busybox_image)
    assert image.path == store.rootfs / image.slug
    assert os.readlink(image.path / "bin/sh") == "busybox"
    assert (image.path / ".oci-digest").read_text().strip() == image.digest
    assert json.loads((image.path / ".oci-config.json").read_text())["os"] == "linux"
    assert image.config.cmd == ["/bin/sh"]
    assert image.config.env == ["PATH=/usr/local/bin:/usr/bin:/bin"]
    assert image.size_bytes > (image.path / "bin/busybox").stat().st_size
    assert store.lookup(busybox_image) == image
    assert store.list_images() == [image]
    assert [p.name for p in store.rootfs.iterdir() if not p.name.endswith(".lock")] == [image.slug]


async def test_pull_docker_v2_manifest(make_store: StoreFactory, registry: RegistryServer) -> None:
    layers = busybox_layers(docker=True)
    ref = push(registry, "busybox-docker", layers, config=config_blob(docker=True), docker=True)
    image = await make_store().pull(ref)
    assert (image.path / "etc/motd").read_text() == "v2\n"
    assert not (image.path / "etc/gone").exists()


async def test_pull_zstd_layers(make_store: StoreFactory, registry: RegistryServer) -> None:
    ref = push(registry, "busybox-zstd", [*busybox_layers("zstd"),
                                          unique_layer("zstd", compression="zstd")])
    image = await make_store().pull(ref)
    assert (image.path / "etc/which").read_text() == "zstd"
    assert (image.path / "data/hard").stat().st_ino == (image.path / "data/orig").stat().st_ino


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-list"])
async def test_index_picks_the_host_platform(make_store: StoreFactory, registry: RegistryServer,
                                             docker: bool) -> None:
    name = f"multi-{'docker' if docker else 'oci'}"
    platforms = [(arch, [unique_layer(arch + name)], config_blob(arch=arch, docker=docker))
                 for arch in ("arm64", "amd64")]
    push_index(registry.access, f"iii-test/{name}", "latest", platforms, docker=docker)
    ref = f"{registry.host}/iii-test/{name}:latest"
    amd = await make_store(platform="linux/amd64").pull(ref)
    assert (amd.path / "etc/which").read_text() == "amd64" + name
    arm = await make_store(home=Path(amd.path).parent.parent / "other",
                           platform="linux/arm64").pull(ref)
    assert (arm.path / "etc/which").read_text() == "arm64" + name
    assert amd.digest == arm.digest  # the index digest, what the ref resolved to


async def test_cached_rootfs_is_reused_without_registry_calls(
        make_store: StoreFactory, registry: RegistryServer) -> None:
    ref = push(registry, "reuse", [unique_layer("reuse")])
    store = make_store()
    first = await store.pull(ref)
    manifests_before = registry.requests("GET", "/iii-test/reuse/manifests/")
    again = await store.pull(ref)
    fresh_store_again = await make_store().pull(ref)
    assert again == first == fresh_store_again
    assert registry.requests("GET", "/iii-test/reuse/manifests/") == manifests_before


async def test_refresh_pulls_again_and_replaces_atomically(
        make_store: StoreFactory, registry: RegistryServer) -> None:
    ref = push(registry, "refresh", [unique_layer("old")])
    store = make_store()
    old = await store.pull(ref)
    push(registry, "refresh", [unique_layer("new")])
    assert (await store.pull(ref)) == old  # no refresh: the cache wins
    new = await store.pull(ref, refresh=True)
    assert new.digest != old.digest
    assert (new.path / "etc/which").read_text() == "new"
    assert [p.name for p in store.rootfs.iterdir() if p.name.startswith(".tmp")] == []


async def test_failed_refresh_keeps_the_cached_image(make_store: StoreFactory,
                                                     registry: RegistryServer) -> None:
    ref = push(registry, "refresh-fail", [unique_layer("keep")])
    store = make_store()
    kept = await store.pull(ref)
    delete_manifest(registry.access, "iii-test/refresh-fail", kept.digest)
    before = cache_listing(store)
    with pytest.raises(ImageError, match="not found"):
        await store.pull(ref, refresh=True)
    assert cache_listing(store) == before
    assert store.lookup(ref) == kept


async def test_concurrent_pulls_of_one_ref_download_once(
        make_store: StoreFactory, registry: RegistryServer) -> None:
    layer = unique_layer("concurrent", size=2 << 20)
    ref = push(registry, "concurrent", [layer])
    store, other_store = make_store(), make_store()  # same home: the flock path too
    events: list[list[PullProgress]] = [[], [], []]
    results = await asyncio.gather(
        store.pull(ref, progress=events[0].append),
        store.pull(ref, progress=events[1].append),
        other_store.pull(ref, progress=events[2].append),
    )
    assert results[0] == results[1] == results[2]
    assert registry.requests("GET", f"/blobs/{layer.digest}") == 1
    assert sum(1 for e in events if e) == 1  # only one of them did the work


async def test_progress_reports_bytes_and_layers(make_store: StoreFactory,
                                                 registry: RegistryServer) -> None:
    layers = [unique_layer(f"progress{i}", size=1 << 20) for i in range(3)]
    ref = push(registry, "progress", layers)
    events: list[PullProgress] = []
    await make_store().pull(ref, progress=events.append)
    total = sum(b.size for b in layers)
    pulls = [e for e in events if e.phase == "pull"]
    extracts = [e for e in events if e.phase == "extract"]
    assert [e.bytes_done for e in pulls] == sorted(e.bytes_done for e in pulls)
    assert pulls[-1].bytes_done == pulls[-1].bytes_total == total
    assert (extracts[-1].layers_done, extracts[-1].layers_total) == (3, 3)
    assert extracts[-1].bytes_done == total


# --------------------------------------------------------------------------- credentials


async def test_credentials_from_docker_config(make_store: StoreFactory,
                                              auth_registry: RegistryServer,
                                              tmp_path: Path) -> None:
    ref = push(auth_registry, "private", [unique_layer("private")])
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    token = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    config.write_text(json.dumps({"auths": {f"http://{auth_registry.host}": {"auth": token}}}))
    image = await make_store(docker_config=config).pull(ref)
    assert (image.path / "etc/which").read_text() == "private"


async def test_401_without_credentials(make_store: StoreFactory,
                                       auth_registry: RegistryServer) -> None:
    ref = push(auth_registry, "private-anon", [unique_layer("private-anon")])
    await assert_pull_fails(make_store(), ref, "requires authentication; add credentials for "
                            f"{auth_registry.host} to ~/.docker/config.json")


async def test_wrong_password_is_reported(make_store: StoreFactory, auth_registry: RegistryServer,
                                          tmp_path: Path) -> None:
    ref = push(auth_registry, "private-bad", [unique_layer("private-bad")])
    config = tmp_path / "config.json"
    token = base64.b64encode(f"{AUTH_USER}:wrong".encode()).decode()
    config.write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    await assert_pull_fails(make_store(docker_config=config), ref, "credentials for it in the "
                            "docker config were rejected")


# -------------------------------------------------------------------------------- mirror


async def test_mirror_serves_docker_hub_refs(make_store: StoreFactory,
                                             registry: RegistryServer) -> None:
    layer = unique_layer("mirrored")
    push_image(registry.access, "library/busybox", "latest", [*busybox_layers(), layer])
    image = await make_store(mirror=registry.host).pull("busybox")
    assert image.ref == "docker.io/library/busybox:latest"
    assert (image.path / "etc/which").read_text() == "mirrored"
    assert registry.requests("GET", f"/library/busybox/blobs/{layer.digest}") == 1


async def test_mirror_miss_falls_back_to_the_origin(make_store: StoreFactory,
                                                    registry: RegistryServer) -> None:
    error = await assert_pull_fails(make_store(mirror=registry.host), "docker.io/library/absent",
                                    "registry-1.docker.io")
    assert f"mirror: {registry.host}" in str(error)
    assert registry.requests("GET", "/library/absent/manifests/latest") == 1


# -------------------------------------------------------------------------------- faults


async def test_digest_mismatch(make_store: StoreFactory, registry: RegistryServer) -> None:
    layer = unique_layer("mismatch", size=64 << 10)
    ref = push(registry, "mismatch", [layer])
    data = registry_blob_path(registry.storage, layer.digest)
    altered = bytearray(data.read_bytes())
    altered[len(altered) // 2] ^= 0xFF
    data.write_bytes(bytes(altered))
    await assert_pull_fails(make_store(), ref, f"does not match digest {layer.digest}")


async def test_truncated_blob(make_store: StoreFactory, registry: RegistryServer) -> None:
    layer = unique_layer("truncated", size=64 << 10)
    ref = push(registry, "truncated", [layer])
    data = registry_blob_path(registry.storage, layer.digest)
    data.write_bytes(data.read_bytes()[: layer.size // 2])
    await assert_pull_fails(make_store(), ref, "truncated blob")


async def test_missing_manifest_404(make_store: StoreFactory, registry: RegistryServer) -> None:
    await assert_pull_fails(make_store(), f"{registry.host}/iii-test/absent:1.0",
                            "not found in")


async def test_invalid_reference(make_store: StoreFactory) -> None:
    with pytest.raises(ImageError, match="invalid tag"):
        await make_store().pull("busybox:bad+tag")


async def test_only_other_platforms_in_index(make_store: StoreFactory,
                                             registry: RegistryServer) -> None:
    platforms = [(arch, [unique_layer("wrong" + arch)], config_blob(arch=arch))
                 for arch in ("arm64", "s390x")]
    push_index(registry.access, "iii-test/wrong-platform", "latest", platforms)
    await assert_pull_fails(make_store(platform="linux/amd64"),
                            f"{registry.host}/iii-test/wrong-platform:latest",
                            "no linux/amd64 image; the image offers: linux/arm64, linux/s390x")


async def test_single_manifest_of_another_platform(make_store: StoreFactory,
                                                   registry: RegistryServer) -> None:
    ref = push(registry, "arm-only", [unique_layer("arm-only")], config=config_blob(arch="arm64"))
    await assert_pull_fails(make_store(platform="linux/amd64"), ref,
                            "no linux/amd64 image; the image offers: linux/arm64")


EVIL = {
    "dotdot": ([TarEntry("../../etc/passwd", data=b"root::0:0::/:/bin/sh\n")], "contains '..'"),
    "symlink-write": ([TarEntry("evil", "symlink", target="/etc"),
                       TarEntry("evil/passwd", data=b"pwned")], "through symlink 'evil'"),
    "hardlink-shadow": ([TarEntry("shadow", "hardlink", target="/etc/shadow")],
                        "'/etc/shadow' is an absolute path"),
}


@pytest.mark.parametrize("case", sorted(EVIL))
async def test_unsafe_layer_is_rejected(make_store: StoreFactory, registry: RegistryServer,
                                        case: str) -> None:
    entries, message = EVIL[case]
    ref = push(registry, f"evil-{case}", [*busybox_layers(), unique_layer(case, entries)])
    error = await assert_pull_fails(make_store(), ref, message)
    assert "layer 5/5" in str(error)


async def test_gzip_bomb_past_the_size_limit(make_store: StoreFactory,
                                             registry: RegistryServer) -> None:
    bomb = unique_layer("bomb", [TarEntry("zeros", data=bytes(48 << 20))])
    assert bomb.size < 1 << 20
    ref = push(registry, "bomb", [bomb])
    await assert_pull_fails(make_store(limits=ExtractLimits(max_bytes=32 << 20)), ref,
                            f"larger than the limit of {32 << 20} uncompressed bytes")


KILLED_PULL = """
import asyncio, sys, time
from pathlib import Path
from daemon.images import ImageStore, RegistrySettings

def progress(report):
    if report.phase == "pull" and report.bytes_done > 0:
        print("downloading", flush=True)
        time.sleep(600)  # freeze mid-download until the test kills us

store = ImageStore(Path(sys.argv[1]), RegistrySettings(docker_config=None))
asyncio.run(store.pull(sys.argv[2], progress=progress))
"""


def kill_pull_mid_download(home: Path, ref: str, layer_size: int) -> None:
    """Run a pull in a subprocess, wait until its layer is partly on disk, SIGKILL it."""
    with subprocess.Popen([sys.executable, "-c", KILLED_PULL, str(home), ref],
                          stdout=subprocess.PIPE, cwd=Path(__file__).parents[3]) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"downloading\n"
            partial = wait_until(lambda: list((home / "rootfs").glob(".tmp-*/blobs/0")), 10,
                                 "the partial download")
            assert partial[0].stat().st_size < layer_size
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


async def test_killed_pull_leaves_no_complete_looking_dir(
        make_store: StoreFactory, registry: RegistryServer, tmp_path: Path) -> None:
    layer = unique_layer("killed", size=8 << 20)
    ref = push(registry, "killed", [layer])
    home = tmp_path / "home"
    kill_pull_mid_download(home, ref, layer.size)
    rootfs = home / "rootfs"
    assert [p.name for p in rootfs.iterdir() if not p.name.startswith(".")] == []
    store = make_store(home=home)  # a new store (daemon restart) cleans up the dead pull
    assert [p.name for p in rootfs.iterdir() if p.name.startswith(".tmp")] == []
    assert store.lookup(ref) is None
    image = await store.pull(ref)
    assert (image.path / "etc/which").read_text() == "killed"


@pytest.mark.slow
async def test_python_image_pulls(make_store: StoreFactory, python_image: str) -> None:
    image = await make_store().pull(python_image)
    assert (image.path / "usr/bin/python3").exists()
    assert not list(image.path.glob("usr/lib/python3*/EXTERNALLY-MANAGED"))
    assert (image.path / "etc/ssl/certs/ca-certificates.crt").exists()
    assert image.config.cmd == ["python3"]


async def test_pull_by_digest_and_a_wrong_digest(make_store: StoreFactory,
                                                 registry: RegistryServer) -> None:
    digest = push_image(registry.access, "iii-test/pinned", "latest", [unique_layer("pinned")])
    ref = f"{registry.host}/iii-test/pinned@{digest}"
    image = await make_store().pull(ref)
    assert image.digest == digest
    assert image.ref == ref
    assert (image.path / "etc/which").read_text() == "pinned"
    await assert_pull_fails(make_store(), f"{registry.host}/iii-test/pinned@sha256:{'0' * 64}",
                            "not found in")


async def test_cancelled_pull_leaves_the_cache_as_it_was(
        make_store: StoreFactory, registry: RegistryServer,
        caplog: pytest.LogCaptureFixture) -> None:
    layers = [unique_layer(f"cancel{i}", size=1 << 20) for i in range(4)]
    ref = push(registry, "cancelled", layers)
    store = make_store()
    before = cache_listing(store)
    first_layer_applied = asyncio.Event()

    def progress(report: PullProgress) -> None:
        if report.phase == "extract":
            first_layer_applied.set()

    task = asyncio.ensure_future(store.pull(ref, progress=progress))
    await asyncio.wait_for(first_layer_applied.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del task
    gc.collect()  # an unretrieved thread error would be logged now
    assert "never retrieved" not in caplog.text
    assert cache_listing(store) == before
    assert store.lookup(ref) is None
    assert (await store.pull(ref)).ref == ref  # and the next pull works


async def test_read_only_image_root_keeps_its_mode_and_metadata(
        make_store: StoreFactory, registry: RegistryServer) -> None:
    ref = push(registry, "ro-root", [unique_layer("ro-root", [TarEntry(".", "dir", mode=0o555)])])
    store = make_store()
    image = await store.pull(ref)
    # A non-root daemon keeps owner rwx on its cache's directories (it must manage them).
    expected = 0o555 if os.geteuid() == 0 else 0o755
    assert stat.S_IMODE(image.path.stat().st_mode) == expected
    assert store.lookup(ref) == image
    os.chmod(image.path, 0o755)  # so tmp_path cleanup works


CROSS_PROCESS_PULL = """
import asyncio, os, sys, time
from pathlib import Path
from daemon.images import ImageStore, RegistrySettings

home, ref, gate = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
downloaded = []

def progress(report):
    if report.phase == "pull" and not downloaded:
        downloaded.append(True)
        print("downloading", flush=True)
        while not gate.exists():  # hold the pull (and its lock) until the test opens the gate
            time.sleep(0.01)

store = ImageStore(home, RegistrySettings(docker_config=None))
print("pulling", flush=True)
image = asyncio.run(store.pull(ref, progress=progress))
print("done", image.digest, "downloaded" if downloaded else "reused", flush=True)
"""


def lock_is_open(pid: int, lock: Path) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd) == str(lock) for fd in fds.iterdir())
    except OSError:
        return False


def test_pulls_in_two_processes_download_once(registry: RegistryServer, tmp_path: Path) -> None:
    layer = unique_layer("two-processes", size=1 << 20)
    ref = push(registry, "two-processes", [layer])
    home, gate = tmp_path / "home", tmp_path / "gate"
    argv = [sys.executable, "-c", CROSS_PROCESS_PULL, str(home), ref, str(gate)]
    cwd = Path(__file__).parents[3]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=cwd) as first:
        try:
            assert first.stdout is not None
            assert first.stdout.readline() == "pulling\n"
            assert first.stdout.readline() == "downloading\n"  # holds the lock from here on
            with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=cwd) as second:
                assert second.stdout is not None
                assert second.stdout.readline() == "pulling\n"
                lock = home / "rootfs" / f".{image_slug(ref)}.lock"
                wait_until(lambda: lock_is_open(second.pid, lock), 10, "the second pull to wait")
                gate.touch()
                first_out, second_out = first.stdout.read(), second.stdout.read()
                assert first.wait() == 0 and second.wait() == 0
        finally:
            gate.touch()  # never leave the first process holding on (Popen's exit waits)
    assert first_out.endswith("downloaded\n")
    assert second_out == first_out.replace("downloaded", "reused")
    assert registry.requests("GET", f"/blobs/{layer.digest}") == 1
