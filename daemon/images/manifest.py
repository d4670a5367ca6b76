"""OCI / Docker v2 manifests and indexes: decode them and pick the host's platform."""

from __future__ import annotations

import json
import platform

import msgspec

from daemon.images.errors import ManifestError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})

_MACHINE_TO_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class Platform(msgspec.Struct, frozen=True):
    architecture: str = ""
    os: str = ""
    variant: str | None = None

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


class Descriptor(msgspec.Struct, frozen=True):
    digest: str
    size: int
    mediaType: str = ""
    platform: Platform | None = None


class ImageManifest(msgspec.Struct, frozen=True):
    config: Descriptor
    layers: list[Descriptor]
    mediaType: str = ""


class ImageIndex(msgspec.Struct, frozen=True):
    manifests: list[Descriptor]
    mediaType: str = ""


def host_platform() -> str:
    """``linux/amd64`` or ``linux/arm64``; other machines are reported as they are."""
    machine = platform.machine().lower()
    return f"linux/{_MACHINE_TO_ARCH.get(machine, machine)}"


def decode_manifest(media_type: str, body: bytes) -> ImageManifest | ImageIndex:
    """Decode by media type (falling back to the document's shape when the type is generic)."""
    try:
        if media_type in INDEX_TYPES:
            return msgspec.json.decode(body, type=ImageIndex)
        if media_type in MANIFEST_TYPES:
            return msgspec.json.decode(body, type=ImageManifest)
        doc = json.loads(body)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        raise ManifestError(f"malformed {media_type or 'manifest'}: {exc}") from exc
    if isinstance(doc, dict) and doc.get("schemaVersion") == 1:
        raise ManifestError("Docker schema 1 manifests are not supported (re-push the image)")
    if isinstance(doc, dict) and "manifests" in doc:
        return decode_manifest(OCI_INDEX, body)
    if isinstance(doc, dict) and "layers" in doc:
        return decode_manifest(OCI_MANIFEST, body)
    raise ManifestError(f"unsupported manifest media type {media_type!r}")


def select_platform(index: ImageIndex, wanted: str) -> Descriptor:
    """The index entry for ``wanted`` (``linux/amd64``); else list what the image offers."""
    offered = []
    for entry in index.manifests:
        if entry.platform is None:
            continue
        name = f"{entry.platform.os}/{entry.platform.architecture}"
        if name == wanted and entry.mediaType in MANIFEST_TYPES | {""}:
            return entry
        if name != "unknown/unknown":  # attestation manifests, not platforms
            offered.append(str(entry.platform))
    listed = ", ".join(sorted(set(offered))) or "none"
    raise ManifestError(f"no {wanted} image; the image offers: {listed}")


def check_config_platform(config: object, wanted: str) -> None:
    """A single-platform image whose config names another platform cannot run here."""
    if not isinstance(config, dict):
        raise ManifestError("image config is not a JSON object")
    os_name, arch = config.get("os"), config.get("architecture")
    if os_name and arch and f"{os_name}/{arch}" != wanted:
        raise ManifestError(f"no {wanted} image; the image offers: {os_name}/{arch}")
