"""OCI image references: parsing and canonicalisation (Docker Hub rules).

``oven/bun:1`` → ``docker.io/oven/bun:1``; ``python`` → ``docker.io/library/python:latest``;
``localhost:5000/x`` stays on ``localhost:5000``. The first path component is a registry host
only when it contains ``.`` or ``:`` or is ``localhost`` (the distribution reference rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from manifests.errors import InvalidReference

__all__ = ["ImageReference", "InvalidReference", "canonical_reference", "parse_reference"]

DOCKER_HUB = "docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}$")
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?$")


@dataclass(frozen=True, slots=True)
class ImageReference:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def canonical(self) -> str:
        """The full reference: registry and tag filled in (``:latest`` only when no digest)."""
        ref = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            ref += f":{self.tag}"
        if self.digest is not None:
            ref += f"@{self.digest}"
        return ref

    @property
    def reference(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest if any, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return self.canonical


def parse_reference(text: str) -> ImageReference:
    """Parse ``[registry/]repository[:tag][@digest]``, applying Docker Hub's defaults.

    Raises :class:`InvalidReference` naming the reference and the offending part.
    """
    raw = text.strip()
    if not raw or len(raw) > 1024 or any(c.isspace() for c in raw):
        raise InvalidReference(f"invalid image reference {text!r}")
    name, digest = raw, None
    if "@" in raw:
        name, digest = raw.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise InvalidReference(f"invalid digest {digest!r} in image reference {text!r}")
    tag = None
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidReference(f"invalid tag {tag!r} in image reference {text!r}")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, repository = first, rest
        if not _HOST_RE.match(registry):
            raise InvalidReference(f"invalid registry {registry!r} in image reference {text!r}")
    else:
        registry, repository = DOCKER_HUB, name
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not _REPOSITORY_RE.match(repository):
        raise InvalidReference(
            f"invalid repository {repository!r} in image reference {text!r} "
            "(lowercase letters, digits and . _ - separators only)"
        )
    if tag is None and digest is None:
        tag = "latest"
    return ImageReference(registry=registry, repository=repository, tag=tag, digest=digest)


def canonical_reference(text: str) -> str:
    """Shorthand for ``parse_reference(text).canonical``."""
    return parse_reference(text).canonical
