"""``--kubernetes --image REPO:TAG``: the tag is resolved to its digest against the real test
registry, as ``crane digest`` does (HEAD's ``Docker-Content-Digest``, else the sha256 of the
manifest a GET returns); refused in one line only when the registry cannot be asked."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from daemon.errors import ImageError, InvalidArgument
from daemon.export.pin import pin_image
from daemon.images import ImageStore, RegistrySettings
from tests.support.fixtures import AUTH_PASSWORD, AUTH_USER
from tests.support.images import (
    Blob,
    TarEntry,
    config_blob,
    layer_blob,
    push_image,
    push_index,
)
from tests.support.registry import FaultProxy, RegistryServer, free_port

SUFFIX = "; pass --image REPO@sha256:... to name the digest yourself"


def store(tmp_path: Path, docker_config: Path | None = None) -> ImageStore:
    """An ImageStore that never reads the developer's ``~/.docker``."""
    settings = RegistrySettings(docker_config=docker_config or tmp_path / "no-docker.json")
    return ImageStore(tmp_path / "home", settings)


def layer(text: str) -> Blob:
    return layer_blob([TarEntry("etc/which", data=text.encode())])


def manifest_requests(registry: RegistryServer, method: str, repo: str) -> int:
    return registry.requests(method, f"/{repo}/manifests/")


async def test_a_tag_is_pinned_to_the_digest_its_registry_gives_now(
        registry: RegistryServer, tmp_path: Path) -> None:
    first = push_image(registry.access, "team/pin", "v1", [layer("one")])
    images = store(tmp_path)
    pinned = await pin_image(images, f"{registry.host}/team/pin:v1")
    assert pinned == f"{registry.host}/team/pin@{first}"
    # one HEAD: the registry's Docker-Content-Digest is the answer, no manifest was downloaded
    assert manifest_requests(registry, "HEAD", "team/pin") == 1
    assert manifest_requests(registry, "GET", "team/pin") == 0

    moved = push_image(registry.access, "team/pin", "v1", [layer("two")])
    assert moved != first
    assert await pin_image(images, f"{registry.host}/team/pin:v1") == \
        f"{registry.host}/team/pin@{moved}"
    # no tag means latest, as for a pull
    latest = push_image(registry.access, "team/pin", "latest", [layer("three")])
    assert await pin_image(images, f"{registry.host}/team/pin") == \
        f"{registry.host}/team/pin@{latest}"


async def test_a_reference_by_digest_is_used_as_given_without_asking(
        registry: RegistryServer, tmp_path: Path) -> None:
    digest = push_image(registry.access, "team/given", None, [layer("given")])
    before = manifest_requests(registry, "HEAD", "team/given")
    for ref in (f"{registry.host}/team/given@{digest}", f"{registry.host}/team/given:v9@{digest}"):
        assert await pin_image(store(tmp_path), ref) == ref
    assert manifest_requests(registry, "HEAD", "team/given") == before


async def test_a_multi_platform_tag_is_pinned_to_its_index(
        registry: RegistryServer, tmp_path: Path) -> None:
    """As ``crane digest``: the index, so the node that runs the pod picks its platform."""
    platforms = []
    for arch in ("amd64", "arm64"):
        blob = layer(arch)
        platforms.append((arch, [blob], config_blob(arch=arch, diff_ids=[blob.diff_id])))
    index = push_index(registry.access, "team/multi", "v1", platforms)
    assert await pin_image(store(tmp_path), f"{registry.host}/team/multi:v1") == \
        f"{registry.host}/team/multi@{index}"


async def test_a_registry_that_refuses_head_is_asked_with_a_get(
        registry: RegistryServer, tmp_path: Path) -> None:
    digest = push_image(registry.access, "team/nohead", "v1", [layer("nohead")])
    proxy = FaultProxy(registry).start()
    try:
        proxy.fail("/team/nohead/manifests/v1", 405)  # the HEAD
        pinned = await pin_image(store(tmp_path), f"{proxy.host}/team/nohead:v1")
        assert pinned == f"{proxy.host}/team/nohead@{digest}"  # sha256 of the body
        assert proxy.faults_injected == 1
        assert [r for r in proxy.requests if "/manifests/" in r] == \
            ["HEAD /v2/team/nohead/manifests/v1", "GET /v2/team/nohead/manifests/v1"]
    finally:
        proxy.stop()


async def test_an_unknown_tag_is_refused_in_one_line(
        registry: RegistryServer, tmp_path: Path) -> None:
    push_image(registry.access, "team/known", "v1", [layer("known")])
    ref = f"{registry.host}/team/known:nope"
    with pytest.raises(ImageError) as caught:
        await pin_image(store(tmp_path), ref)
    assert str(caught.value) == (f"image {ref}: resolving tag nope: not found in "
                                 f"{registry.host}/team/known (HTTP 404){SUFFIX}")


async def test_a_registry_that_cannot_be_asked_is_named_in_one_line(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ImageError) as caught:
        await pin_image(store(tmp_path), f"{host}/team/gone:v1")
    message = str(caught.value)
    assert message.startswith(f"image {host}/team/gone:v1: resolving tag v1: ")
    assert "Cannot connect" in message and message.endswith(SUFFIX)
    assert "\n" not in message


async def test_credentials_come_from_the_docker_config_as_for_pulls(
        auth_registry: RegistryServer, tmp_path: Path) -> None:
    digest = push_image(auth_registry.access, "team/private", "v1", [layer("private")])
    ref = f"{auth_registry.host}/team/private:v1"
    with pytest.raises(ImageError, match="requires authentication.*docker login"):
        await pin_image(store(tmp_path), ref)
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    token = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    config.write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    assert await pin_image(store(tmp_path, config), ref) == \
        f"{auth_registry.host}/team/private@{digest}"


async def test_a_malformed_reference_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"^--image 'Team/X:v1': .*REPO:TAG"):
        await pin_image(store(tmp_path), "Team/X:v1")
