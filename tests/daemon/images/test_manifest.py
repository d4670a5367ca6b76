from __future__ import annotations

import json

import pytest

from daemon.images.errors import ManifestError
from daemon.images.manifest import (
    DOCKER_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageIndex,
    ImageManifest,
    check_config_platform,
    decode_manifest,
    host_platform,
    select_platform,
)

DIGEST = "sha256:" + "b" * 64


def index(*platforms: tuple[str, str]) -> ImageIndex:
    doc = {"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": f"sha256:{i:064x}", "size": 10,
         "platform": {"os": os_, "architecture": arch}} for i, (os_, arch) in enumerate(platforms)]}
    decoded = decode_manifest(OCI_INDEX, json.dumps(doc).encode())
    assert isinstance(decoded, ImageIndex)
    return decoded


def test_host_platform_is_linux_amd64_or_arm64() -> None:
    assert host_platform() in ("linux/amd64", "linux/arm64")


def test_select_platform_picks_the_wanted_one() -> None:
    idx = index(("linux", "arm64"), ("linux", "amd64"), ("unknown", "unknown"))
    assert select_platform(idx, "linux/amd64").digest == f"sha256:{1:064x}"


def test_no_matching_platform_lists_the_offered_ones() -> None:
    idx = index(("linux", "s390x"), ("linux", "arm64"), ("unknown", "unknown"),
                ("windows", "amd64"))
    with pytest.raises(ManifestError, match=r"no linux/amd64 image; the image offers: "
                                            r"linux/arm64, linux/s390x, windows/amd64$"):
        select_platform(idx, "linux/amd64")


@pytest.mark.parametrize(("media_type", "doc", "kind"), [
    (OCI_MANIFEST, {"config": {"digest": DIGEST, "size": 1}, "layers": []}, ImageManifest),
    ("application/json", {"config": {"digest": DIGEST, "size": 1}, "layers": []}, ImageManifest),
    (DOCKER_LIST, {"manifests": []}, ImageIndex),
    ("", {"manifests": []}, ImageIndex),
], ids=["oci-manifest", "generic-manifest", "docker-list", "untyped-index"])
def test_decode_by_media_type_or_shape(media_type: str, doc: object, kind: type) -> None:
    assert isinstance(decode_manifest(media_type, json.dumps(doc).encode()), kind)


@pytest.mark.parametrize(("media_type", "body", "message"), [
    (OCI_MANIFEST, b"{", "malformed"),
    (OCI_MANIFEST, b'{"layers": []}', "malformed"),
    ("application/vnd.docker.distribution.manifest.v1+prettyjws", b'{"schemaVersion": 1}',
     "schema 1"),
    ("text/html", b'{"hello": 1}', "unsupported manifest media type"),
], ids=["truncated-json", "missing-config", "schema1", "unknown"])
def test_bad_manifests_are_clear_errors(media_type: str, body: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        decode_manifest(media_type, body)


def test_config_platform_check() -> None:
    check_config_platform({"os": "linux", "architecture": "amd64"}, "linux/amd64")
    check_config_platform({}, "linux/amd64")  # old images omit it: accepted
    with pytest.raises(ManifestError, match="offers: linux/arm64"):
        check_config_platform({"os": "linux", "architecture": "arm64"}, "linux/amd64")
