"""What the image store hands out: cached images, their run config, pull progress."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec


class ImageConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The run-relevant part of an OCI image config (``config`` object of the config blob)."""

    env: list[str] = []
    entrypoint: list[str] = []
    cmd: list[str] = []
    working_dir: str = ""
    user: str = ""


class CachedImage(msgspec.Struct, frozen=True, kw_only=True):
    """A complete rootfs in the cache: ``path`` is ``$III_HOME/rootfs/<slug>``.

    ``digest`` is the manifest digest the ref resolved to (the index digest for multi-platform
    images); ``size_bytes`` the uncompressed size of the extracted files.
    """

    ref: str
    digest: str
    slug: str
    path: Path
    size_bytes: int
    config: ImageConfig


class PullProgress(msgspec.Struct, frozen=True, kw_only=True):
    """One progress report: compressed bytes and layers, downloaded ("pull") or applied
    ("extract")."""

    phase: Literal["pull", "extract"]
    bytes_done: int
    bytes_total: int
    layers_done: int
    layers_total: int


class ExtractLimits(msgspec.Struct, frozen=True, kw_only=True):
    """SPEC §6 limits over all layers of one image (injectable so tests stay small)."""

    max_entries: int = 1_000_000
    max_bytes: int = 10 * 1024**3


def image_config_from_blob(doc: object) -> ImageConfig:
    """Read ``config`` out of a decoded config blob; missing or null fields become empty."""
    section = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(section, dict):
        return ImageConfig()

    def strings(key: str) -> list[str]:
        value = section.get(key)
        return [str(v) for v in value] if isinstance(value, list) else []

    return ImageConfig(env=strings("Env"), entrypoint=strings("Entrypoint"), cmd=strings("Cmd"),
                       working_dir=str(section.get("WorkingDir") or ""),
                       user=str(section.get("User") or ""))
