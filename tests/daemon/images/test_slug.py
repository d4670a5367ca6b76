from __future__ import annotations

import hashlib

import pytest

from daemon.images.slug import image_slug
from manifests.reference import InvalidReference


def h12(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(("ref", "readable", "canonical"), [
    ("busybox", "docker.io-library-busybox-latest", "docker.io/library/busybox:latest"),
    ("oven/bun:1", "docker.io-oven-bun-1", "docker.io/oven/bun:1"),
    ("localhost:5000/a/b__c:v1.2", "localhost-5000-a-b__c-v1.2", "localhost:5000/a/b__c:v1.2"),
    ("Registry.Example:443/app:RC", "registry.example-443-app-rc",
     "Registry.Example:443/app:RC"),
    (f"python@{DIGEST}", f"docker.io-library-python-sha256-{'a' * 64}",
     f"docker.io/library/python@{DIGEST}"),
], ids=["hub-single-name", "hub-org-tag", "local-port", "uppercase-host-and-tag", "digest"])
def test_slug_rule(ref: str, readable: str, canonical: str) -> None:
    assert image_slug(ref) == f"{readable}-{h12(canonical)}"


def test_equivalent_refs_share_a_slug_and_different_refs_never_do() -> None:
    assert image_slug("busybox") == image_slug("docker.io/library/busybox:latest")
    assert image_slug("index.docker.io/library/busybox") == image_slug("busybox:latest")
    # Same readable part after lowercasing, different canonical refs: the hash keeps them apart.
    assert image_slug("Host.example/app:V1") != image_slug("host.example/app:v1")
    assert image_slug("a/b-c:d") != image_slug("a/b:c-d")


def test_invalid_reference_raises() -> None:
    with pytest.raises(InvalidReference):
        image_slug("Upper/Case")
