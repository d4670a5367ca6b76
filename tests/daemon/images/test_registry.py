"""Retries and error translation of the registry client, through a fault-injecting proxy in
front of the real registry."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from daemon.errors import ImageError
from daemon.images import PullProgress
from tests.daemon.images.conftest import StoreFactory
from tests.support.images import TarEntry, layer_blob, push_image
from tests.support.registry import FaultProxy, RegistryServer, free_port


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(registry).start()
    yield fault_proxy
    fault_proxy.stop()


def push_unique(registry: RegistryServer, name: str, size: int = 256 << 10) -> str:
    layer = layer_blob([TarEntry("payload", data=os.urandom(size))])
    push_image(registry.access, f"iii-test/{name}", "latest", [layer])
    return layer.digest


async def test_5xx_on_manifest_is_retried(make_store: StoreFactory, registry: RegistryServer,
                                          proxy: FaultProxy) -> None:
    push_unique(registry, "retry-manifest")
    proxy.fail("/manifests/latest", 503, times=2)
    image = await make_store().pull(f"{proxy.host}/iii-test/retry-manifest")
    assert (image.path / "payload").stat().st_size == 256 << 10
    assert proxy.seen("/manifests/latest") == 3


async def test_connection_cut_mid_blob_is_retried_and_progress_rolls_back(
        make_store: StoreFactory, registry: RegistryServer, proxy: FaultProxy) -> None:
    digest = push_unique(registry, "retry-blob", size=2 << 20)
    proxy.cut(f"/blobs/{digest}", times=1)
    events: list[PullProgress] = []
    image = await make_store().pull(f"{proxy.host}/iii-test/retry-blob", progress=events.append)
    assert (image.path / "payload").stat().st_size == 2 << 20
    assert proxy.seen(f"/blobs/{digest}") == 2
    final = [e for e in events if e.phase == "pull"][-1]
    assert final.bytes_done == final.bytes_total


async def test_persistent_5xx_gives_up_after_three_tries(
        make_store: StoreFactory, registry: RegistryServer, proxy: FaultProxy) -> None:
    digest = push_unique(registry, "retry-fail")
    proxy.fail(f"/blobs/{digest}", 502, times=10)
    ref = f"{proxy.host}/iii-test/retry-fail:latest"
    with pytest.raises(ImageError, match=rf"^image {ref}: downloading layer 1/1 .*HTTP 502"):
        await make_store().pull(ref)
    assert proxy.seen(f"/blobs/{digest}") == 3


async def test_4xx_is_not_retried(make_store: StoreFactory, registry: RegistryServer,
                                  proxy: FaultProxy) -> None:
    push_unique(registry, "no-retry")
    proxy.fail("/manifests/latest", 403, times=10)
    with pytest.raises(ImageError, match="access to .* denied"):
        await make_store().pull(f"{proxy.host}/iii-test/no-retry")
    assert proxy.seen("/manifests/latest") == 1


async def test_unreachable_registry_is_one_clear_error(make_store: StoreFactory) -> None:
    ref = f"127.0.0.1:{free_port()}/iii-test/nothing:latest"
    with pytest.raises(ImageError) as info:
        await make_store().pull(ref)
    assert str(info.value).startswith(f"image {ref}: fetching manifest latest: Cannot connect")
    assert "\n" not in str(info.value)
