"""Failures inside the image pipeline; :class:`daemon.images.store.ImageStore` turns each into
one ``daemon.errors.ImageError(ref, message)`` at its boundary.

    PullFailure
    ├── RegistryError      HTTP/connection/auth/protocol failure talking to a registry
    ├── ManifestError      a manifest, index or config that cannot be used (platform, media type)
    ├── DigestMismatch     a blob whose bytes do not hash to its descriptor's digest
    └── LayerError         a layer that is corrupt, unsafe or over the extraction limits
"""

from __future__ import annotations


class PullFailure(Exception):
    """Base of every pipeline failure; ``str()`` is the one-line message shown to users."""


class RegistryError(PullFailure):
    """Raised when a registry request fails; ``transient`` ones (connection, 5xx) are retried."""

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.transient, self.status = transient, status


class ManifestError(PullFailure):
    """Raised for a manifest/index/config we cannot use: bad JSON, media type, no platform."""


class DigestMismatch(PullFailure):
    """Raised when downloaded bytes do not match the descriptor's digest or size."""


class LayerError(PullFailure):
    """Raised when a layer is corrupt, unsafe (escapes the root) or exceeds the limits."""
