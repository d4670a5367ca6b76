"""Session fixtures for real registries and images (enabled by ``pytest_plugins`` in
``tests/conftest.py``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.images import (
    PYTHON,
    ImageRecipe,
    build_image,
    busybox_layers,
    image_cached,
    push_image,
)
from tests.support.registry import RegistryServer

AUTH_USER = "iii-test"
AUTH_PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    """A real ``docker-registry`` on a free loopback port, anonymous access."""
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="session")
def auth_registry() -> Iterator[RegistryServer]:
    """A second real registry that requires htpasswd (bcrypt) Basic credentials."""
    with RegistryServer(username=AUTH_USER, password=AUTH_PASSWORD) as server:
        yield server


@pytest.fixture(scope="session")
def busybox_image(registry: RegistryServer) -> str:
    """Ref of a 4-layer busybox OCI image (see ``tests.support.images.busybox_layers``)."""
    push_image(registry.access, "iii-test/busybox", "latest", busybox_layers())
    return f"{registry.host}/iii-test/busybox:latest"


def push_built_image(registry: RegistryServer, recipe: ImageRecipe, repo: str, tag: str) -> str:
    """Push ``recipe``'s debootstrap image (built once per machine, then cached) as ``repo:tag``;
    skip the test when it is not built yet and cannot be (debootstrap needs root), or when its
    build cannot fetch what it needs (no network): never a silent pass."""
    if os.geteuid() != 0 and not image_cached(recipe):
        pytest.skip(f"building the debootstrap {recipe.name} image needs root (CI runs as root)")
    try:
        built = build_image(recipe)
    except OSError as exc:  # urllib's URLError is an OSError: the npm registry is unreachable
        pytest.skip(f"cannot build the {recipe.name} image (network?): {exc}")
    push_image(registry.access, repo, tag, [built.layer], built.config)
    return f"{registry.host}/{repo}:{tag}"


def push_python_image(registry: RegistryServer, repo: str, tag: str) -> str:
    return push_built_image(registry, PYTHON, repo, tag)


@pytest.fixture(scope="session")
def python_image(registry: RegistryServer) -> str:
    """Ref of the debootstrap bookworm python3 image."""
    return push_python_image(registry, "iii-test/python", "bookworm")
