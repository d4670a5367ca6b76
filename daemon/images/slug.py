"""The rootfs cache directory name of an image reference (SPEC §2)."""

from __future__ import annotations

import hashlib
import re

from manifests.reference import canonical_reference

_UNSAFE = re.compile(r"[^a-z0-9._-]")
_DASHES = re.compile(r"-+")


def image_slug(ref: str) -> str:
    """``busybox`` → ``docker.io-library-busybox-latest-<12 hex of sha256(canonical)>``.

    Canonicalise, lowercase, map every char outside ``[a-z0-9._-]`` to ``-``, collapse runs of
    ``-``, then append ``-`` and the first 12 hex digits of sha256(canonical ref): two refs never
    share a slug. Raises :class:`manifests.reference.InvalidReference` for a malformed ref.
    """
    canonical = canonical_reference(ref)
    readable = _DASHES.sub("-", _UNSAFE.sub("-", canonical.lower()))
    return f"{readable}-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"
