"""``iii worker export`` re-publishes every base layer as it is: uncompressed tar, tar+gzip and
tar+zstd (the three compressions OCI names and the pull accepts), alone and mixed in one
manifest, and Docker's names for them under their OCI names.

The base is the 4-layer busybox image (whiteouts, opaque dirs, hard links) pushed to the real
test registry in the given compression; a real daemon prepares a shell worker on it; the export
is read back by skopeo (the layer digests and media types) and by umoci (the unpacked tree), both
from an OCI layout on disk and from the registry after a push."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.images import Blob, busybox_layers, layer_blob, push_image
from tests.support.projects import make_shell_project
from tests.support.registry import RegistryServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("umoci") is None or shutil.which("skopeo") is None,
                       reason="umoci and skopeo read the export back"),
]

OCI = "application/vnd.oci.image.layer.v1."
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# compression of each of the four busybox layers, per case
CASES = {
    "tar": ["none"] * 4,
    "tar+gzip": ["gzip"] * 4,
    "tar+zstd": ["zstd"] * 4,
    "mixed": ["none", "gzip", "zstd", "gzip"],
}
INSTALL = "mkdir -p /opt && echo installed > /opt/installed && rm /etc/motd"

def base_layers(compressions: list[str]) -> list[Blob]:
    """Layer ``i`` of busybox in ``compressions[i]``: same trees, different blobs."""
    built = {c: busybox_layers(c) for c in set(compressions)}
    return [built[c][i] for i, c in enumerate(compressions)]


def skopeo_layers(transport_ref: str) -> list[tuple[str, str]]:
    """(media type, digest) of each layer of the manifest skopeo reads at ``transport_ref``."""
    raw = json.loads(subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", transport_ref], check=True,
        capture_output=True, text=True).stdout)
    return [(layer["mediaType"], layer["digest"]) for layer in raw["layers"]]


def unpack(layout: Path, tag: str, bundle: Path) -> Path:
    """umoci's unpack of ``layout:tag``. Debian's umoci (0.4.7) refuses tar+zstd layers (umoci
    reads them from 0.5 on): such an image is unpacked from the gzip copy skopeo makes of it,
    so skopeo decompresses and checks the zstd blobs and umoci checks the tree."""
    if any(t == OCI + "tar+zstd" for t, _ in skopeo_layers(f"oci:{layout}:{tag}")):
        gzipped = bundle.with_name(f"{bundle.name}-gzip")
        subprocess.run(["skopeo", "copy", "--dest-compress-format", "gzip",
                        f"oci:{layout}:{tag}", f"oci:{gzipped}:{tag}"], check=True,
                       capture_output=True)
        assert {t for t, _ in skopeo_layers(f"oci:{gzipped}:{tag}")} == {OCI + "tar+gzip"}
        layout = gzipped
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], check=True,
                   capture_output=True)
    return bundle / "rootfs"


def check_tree(rootfs: Path) -> None:
    """The four base layers applied in order, plus what install changed."""
    assert (rootfs / "bin/busybox").is_file() and (rootfs / "bin/sh").is_symlink()
    assert not (rootfs / "etc/gone").exists()  # a whiteout in layer 2
    assert sorted(p.name for p in (rootfs / "opaque").iterdir()) == ["new"]  # opaque dir
    assert (rootfs / "data/hard").stat().st_ino == (rootfs / "data/orig").stat().st_ino
    assert (rootfs / "etc/readonly").read_text() == "ro2\n"  # layer 4 overwrites layer 3
    assert (rootfs / "opt/installed").read_text() == "installed\n"  # the sandbox layer
    assert not (rootfs / "etc/motd").exists()  # install deleted a base file
    assert (rootfs / "workspace/requirements.txt").is_file()


@pytest.mark.parametrize("case", list(CASES))
def test_export_republishes_each_base_layer_as_it_is(
        case: str, daemon_factory, registry: RegistryServer, tmp_path: Path) -> None:
    layers = base_layers(CASES[case])
    slug = case.replace("+", "-")
    push_image(registry.access, f"iii-test/busybox-{slug}", "latest", layers)
    base = f"{registry.host}/iii-test/busybox-{slug}:latest"
    expected = [(layer.media_type, layer.digest) for layer in layers]
    assert {t for t, _ in expected} <= {OCI + "tar", OCI + "tar+gzip", OCI + "tar+zstd"}

    project = make_shell_project(tmp_path, base, "boxed", start="exec sleep 600",
                                 install=INSTALL)
    daemon = daemon_factory()
    added = daemon.iii("worker", "add", str(project))
    assert added.returncode == 0, added.stderr

    # to an OCI layout on disk
    layout = tmp_path / "image"
    done = daemon.json("worker", "export", "boxed", "--to", f"oci:{layout}:v1")
    on_disk = skopeo_layers(f"oci:{layout}:v1")
    assert on_disk[:4] == expected
    assert on_disk[4] == (OCI + "tar+gzip", done["layer_digest"])
    check_tree(unpack(layout, "v1", tmp_path / "bundle"))

    # to the registry: the base blobs are mounted from the base's repository, never re-sent
    target = f"{registry.host}/team/boxed-{slug}:v1"
    pushed = daemon.json("worker", "export", "boxed", "--to", target)
    assert pushed["digest"] == done["digest"]
    assert pushed["blobs_reused"] == 4 and pushed["blobs_uploaded"] == 1
    assert skopeo_layers(f"docker://{target}") == on_disk
    copied = tmp_path / "copied"
    subprocess.run(["skopeo", "copy", "--preserve-digests", "--src-tls-verify=false",
                    f"docker://{target}", f"oci:{copied}:v1"], check=True, capture_output=True)
    check_tree(unpack(copied, "v1", tmp_path / "bundle2"))
    # and this project's own pull takes the exported image back
    pulled = daemon.json("image", "pull", target)
    assert pulled["digest"] == pushed["digest"]


def test_docker_layer_names_are_published_under_their_oci_names(
        daemon_factory, registry: RegistryServer, tmp_path: Path) -> None:
    """A Docker v2 base (gzip layers named the Docker way): same blobs, OCI media types, since
    umoci and others refuse Docker types inside an OCI manifest."""
    layers = busybox_layers("gzip", docker=True)
    push_image(registry.access, "iii-test/busybox-docker", "latest", layers, docker=True)
    base = f"{registry.host}/iii-test/busybox-docker:latest"
    assert {layer.media_type for layer in layers} == {DOCKER_GZIP}
    project = make_shell_project(tmp_path, base, "docked", start="exec sleep 600",
                                 install=INSTALL)
    daemon = daemon_factory()
    added = daemon.iii("worker", "add", str(project))
    assert added.returncode == 0, added.stderr
    layout = tmp_path / "image"
    daemon.json("worker", "export", "docked", "--to", f"oci:{layout}:v1")
    assert skopeo_layers(f"oci:{layout}:v1")[:4] == \
        [(OCI + "tar+gzip", layer.digest) for layer in layers]
    check_tree(unpack(layout, "v1", tmp_path / "bundle"))


def test_a_layer_type_export_cannot_republish_is_refused_in_one_line(
        daemon_factory, registry: RegistryServer, tmp_path: Path) -> None:
    """A non-distributable layer (its blob may not be re-published) is named, not shipped."""
    layers = busybox_layers("gzip")
    layers[3] = layer_blob([], "gzip")
    layers[3].media_type = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    push_image(registry.access, "iii-test/busybox-foreign", "latest", layers)
    base = f"{registry.host}/iii-test/busybox-foreign:latest"
    project = make_shell_project(tmp_path, base, "foreign", start="exec sleep 600")
    daemon = daemon_factory()
    added = daemon.iii("worker", "add", str(project))
    assert added.returncode == 0, added.stderr
    res = daemon.iii("worker", "export", "foreign", "--to", f"oci:{tmp_path / 'x'}")
    assert res.returncode == 1, res.stdout
    [line] = res.stderr.strip().splitlines()
    assert line == (f"error: the base image {base} has a "
                    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip layer, which "
                    "export cannot re-publish (tar, tar+gzip and tar+zstd layers it can); base "
                    "the worker on another image")
    assert not (tmp_path / "x").exists()
