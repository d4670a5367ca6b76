"""Which images a ``sandbox::create`` may boot (``sandboxes:`` in daemon.yaml): catalog names,
the allowlist, and any OCI reference only with ``allow_any_image``."""

from __future__ import annotations

from client.protocol.sandbox import CatalogEntry, CatalogListResponse
from daemon.config.sandbox_policy import SandboxPolicy
from daemon.ephemeral.errors import SCode, sandbox_error
from manifests.reference import InvalidReference, canonical_reference

__all__ = ["catalog_list", "resolve_image"]


def catalog_list(policy: SandboxPolicy) -> CatalogListResponse:
    """Upstream's ``sandbox::catalog::list``: presets first, then the others by name; only what
    the allowlist lets through."""
    images = policy.images()
    allowed = [name for name in images if _allowed(policy, name)]
    presets = [n for n in allowed if policy.preset(n)]
    custom = sorted(n for n in allowed if not policy.preset(n))
    return CatalogListResponse(images=[
        CatalogEntry(name=n, oci_ref=images[n], kind="preset" if policy.preset(n) else "custom")
        for n in presets + custom])


def _allowed(policy: SandboxPolicy, name: str) -> bool:
    return policy.image_allowlist is None or name in policy.image_allowlist


def resolve_image(policy: SandboxPolicy, image: str) -> str:
    """The OCI reference to boot for ``image`` (a catalog name, or with ``allow_any_image`` any
    reference). Raises S100 naming what is allowed."""
    images = policy.images()
    if image in images and _allowed(policy, image):
        return images[image]
    if policy.allow_any_image and image not in images and ("/" in image or ":" in image):
        try:
            return canonical_reference(image)
        except InvalidReference as exc:
            raise sandbox_error(SCode.S001, f"invalid request: image {image!r}: {exc}") from exc
    names = ", ".join(repr(n) for n in images if _allowed(policy, n)) or "none (image_allowlist "\
        "is empty)"
    any_ref = "" if not policy.allow_any_image else "; or a full OCI reference such as " \
        "docker.io/library/python:3.12"
    raise sandbox_error(SCode.S100, f"image {image!r} not in catalog; valid names are {names}"
                        f"{any_ref} (sandbox::catalog::list lists them; operators add names "
                        "under sandboxes.catalog in daemon.yaml)")
