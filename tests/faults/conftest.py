"""Fixtures for the fault-injection suite: the real daemon process, the stand-in engine, the
session registry and a :class:`~tests.support.registry.FaultProxy` in front of it that can fail,
cut or hold downloads on demand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import daemon_factory
from tests.support.engine import engine_factory
from tests.support.registry import FaultProxy, RegistryServer

__all__ = ["complete_looking", "daemon_factory", "engine_factory", "temp_dirs"]


def complete_looking(home: Path) -> list[str]:
    """Cache dirs a reader would take for a complete image (non-dot dir with ``.oci-digest``)."""
    rootfs = home / "rootfs"
    if not rootfs.is_dir():
        return []
    return sorted(p.name for p in rootfs.iterdir()
                  if not p.name.startswith(".") and (p / ".oci-digest").exists())


def temp_dirs(home: Path) -> list[str]:
    """In-progress (or abandoned) pull work dirs under ``rootfs/``."""
    rootfs = home / "rootfs"
    return sorted(p.name for p in rootfs.glob(".tmp-*")) if rootfs.is_dir() else []


@pytest.fixture
def fault_proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in front of the session registry, stopped at teardown."""
    proxy = FaultProxy(registry).start()
    try:
        yield proxy
    finally:
        proxy.stop()
