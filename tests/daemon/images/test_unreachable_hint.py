"""The hint attached to an image error when Docker Hub cannot be reached (use a mirror)."""

from __future__ import annotations

import pytest

from daemon.errors import ImageError
from daemon.images.errors import DigestMismatch, RegistryError
from daemon.images.store import image_errors


@pytest.mark.parametrize(("ref", "failure", "hinted"), [
    ("docker.io/iiidev/python:latest", RegistryError("cannot connect", transient=True), True),
    ("docker.io/library/busybox:latest", RegistryError("HTTP 404", status=404), False),
    ("docker.io/library/busybox:latest", RegistryError("HTTP 503", status=503), False),
    ("ghcr.io/org/img:1", RegistryError("cannot connect", transient=True), False),
    ("docker.io/library/busybox:latest", DigestMismatch("bad bytes"), False),
], ids=["hub-unreachable", "hub-404", "hub-5xx", "other-registry", "not-a-connection-error"])
def test_hint_only_when_docker_hub_cannot_be_reached(ref: str, failure: Exception,
                                                     hinted: bool) -> None:
    with pytest.raises(ImageError) as caught, image_errors(ref):
        raise failure
    data = caught.value.data()
    if hinted:
        assert data is not None and "III_REGISTRY_MIRROR=host:port" in str(data["hint"])
    else:
        assert data is None
    assert caught.value.message.startswith(f"image {ref}: ")
