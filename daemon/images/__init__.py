"""OCI images: pull from registries into the rootfs cache (SPEC §6).

    store = ImageStore(home, RegistrySettings.from_env())
    image = await store.pull("python:3.12-slim", progress=print)   # -> CachedImage
    store.lookup("python:3.12-slim"), store.list_images()

Every failure raises ``daemon.errors.ImageError(ref, message)`` and leaves the cache untouched.
"""

from __future__ import annotations

from daemon.images.models import CachedImage, ExtractLimits, ImageConfig, PullProgress
from daemon.images.settings import RegistrySettings
from daemon.images.slug import image_slug
from daemon.images.store import ImageStore

__all__ = [
    "CachedImage",
    "ExtractLimits",
    "ImageConfig",
    "ImageStore",
    "PullProgress",
    "RegistrySettings",
    "image_slug",
]
