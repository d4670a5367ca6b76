from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.images import ExtractLimits, ImageStore, RegistrySettings

StoreFactory = Callable[..., ImageStore]


@pytest.fixture
def make_store(tmp_path: Path) -> StoreFactory:
    """ImageStores over a private home; ``docker_config`` defaults to an absent file so the
    developer's ``~/.docker`` is never read."""

    def make(*, home: Path | None = None, mirror: str | None = None,
             docker_config: Path | None = None, limits: ExtractLimits | None = None,
             platform: str | None = None) -> ImageStore:
        settings = RegistrySettings(mirror=mirror,
                                    docker_config=docker_config or tmp_path / "no-docker.json")
        return ImageStore(home or tmp_path / "home", settings, limits=limits, platform=platform)

    return make


def cache_listing(store: ImageStore) -> list[str]:
    """Everything under rootfs/ except lock files (which are created on demand and kept)."""
    found = []
    for dirpath, dirs, files in os.walk(store.rootfs):
        rel = os.path.relpath(dirpath, store.rootfs)
        found += [os.path.join(rel, n) for n in dirs + files if not n.endswith(".lock")]
    return sorted(found)
