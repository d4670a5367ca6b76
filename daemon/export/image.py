"""Assemble the exported image: base layers by digest + the sandbox layer, config, manifest.

Everything here is pure (JSON in, canonical JSON bytes out) so the same inputs give the same
manifest digest; writing an OCI image layout on disk is :func:`write_oci_layout`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.export.layer import LayerBlob

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
# Base layers are re-published as they are (same bytes, same digest), under their OCI name:
# umoci and others refuse Docker media types inside an OCI manifest. The Docker names are
# containerd's (``images/mediatypes.go``); a descriptor without a type was always gzip here.
BASE_LAYER_TYPES = {
    OCI_LAYER: OCI_LAYER,
    LAYER_MEDIA_TYPE: LAYER_MEDIA_TYPE,
    OCI_LAYER_ZSTD: OCI_LAYER_ZSTD,
    "application/vnd.docker.image.rootfs.diff.tar": OCI_LAYER,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": LAYER_MEDIA_TYPE,
    "application/vnd.docker.image.rootfs.diff.tar.zstd": OCI_LAYER_ZSTD,
    "": LAYER_MEDIA_TYPE,
}
RESERVED_ENV_PREFIX = "III_"
WORKSPACE = "/workspace"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class BuiltImage:
    config: bytes
    manifest: bytes

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def config_digest(self) -> str:
        return digest_of(self.config)


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def base_layer(media_type: str, digest: str, size: int) -> Descriptor | None:
    """The descriptor a base layer is re-published under, or None for a type export cannot
    re-publish (non-distributable or foreign layers, or compressions OCI does not name)."""
    oci = BASE_LAYER_TYPES.get(media_type)
    return None if oci is None else Descriptor(oci, digest, size)


def canonical(doc: object) -> bytes:
    """Sorted keys, no spaces: one byte sequence per document, hence one digest."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def image_env(base_env: Sequence[str], manifest_env: Mapping[str, str]) -> list[str]:
    """The base image's env overlaid with the manifest env, minus the reserved ``III_*`` keys
    (the engine URL and the worker name are per deployment, set by whoever runs the image).
    The caller passes only literal manifest values: values from ``config:`` entries or ``${VAR}``
    expansion are secrets and go into a Kubernetes Secret, never into the image."""
    merged: dict[str, str] = {}
    for item in base_env:
        key, _, value = item.partition("=")
        merged[key] = value
    merged.update(manifest_env)
    return [f"{k}={v}" for k, v in merged.items() if not k.startswith(RESERVED_ENV_PREFIX)]


def build_image(base_config: Mapping[str, object], base_layers: Sequence[Descriptor],
                layer: LayerBlob, *, start: str, env: Mapping[str, str],
                labels: Mapping[str, str]) -> BuiltImage:
    """The config and manifest of base + ``layer``, running ``start`` in /workspace."""
    doc: dict[str, Any] = json.loads(json.dumps(base_config))  # deep copy, JSON types only
    old = doc.get("config")
    section: dict[str, Any] = dict(old) if isinstance(old, dict) else {}
    old_env = section.get("Env")
    base_env: list[Any] = old_env if isinstance(old_env, list) else []
    section["Env"] = image_env([str(e) for e in base_env], env)
    section["Entrypoint"] = ["/bin/sh", "-c", start]
    section.pop("Cmd", None)  # a base Cmd would become arguments of sh -c
    section["WorkingDir"] = WORKSPACE
    section["Labels"] = {**(section.get("Labels") or {}), **labels}
    doc["config"] = section
    rootfs = doc.get("rootfs")
    old_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    diff_ids = list(old_ids) if isinstance(old_ids, list) else []
    if len(diff_ids) != len(base_layers):
        raise ValueError(f"the base config lists {len(diff_ids)} layers but its manifest "
                         f"{len(base_layers)}")
    doc["rootfs"] = {"type": "layers", "diff_ids": [*diff_ids, layer.diff_id]}
    # history must name every non-empty layer or strict tools refuse the config
    old_history = doc.get("history")
    history = list(old_history) if isinstance(old_history, list) else []
    history.append({"created_by": "iii worker export (sandbox upper dir + /workspace)"})
    doc["history"] = history
    doc.pop("created", None)  # a timestamp would change the digest of every export
    config = canonical(doc)
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": Descriptor(CONFIG_MEDIA_TYPE, digest_of(config), len(config)).to_json(),
        "layers": [d.to_json() for d in base_layers]
        + [Descriptor(LAYER_MEDIA_TYPE, layer.digest, layer.size).to_json()],
        "annotations": dict(labels),
    })
    return BuiltImage(config=config, manifest=manifest)


def write_oci_layout(dest: Path, tag: str, image: BuiltImage, blobs: Mapping[str, Path]) -> None:
    """Write an OCI image layout at ``dest`` (created or updated) with ``image`` as ``tag``.

    ``blobs`` maps every layer digest to a file holding it. Blobs go in first and index.json is
    replaced last, atomically, so a reader never sees a tag whose blobs are missing.
    """
    blob_dir = dest / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put_bytes(data: bytes) -> None:
        _atomic_write(blob_dir / digest_of(data).removeprefix("sha256:"), data)

    for digest, path in blobs.items():
        target = blob_dir / digest.removeprefix("sha256:")
        if not target.exists():
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
    put_bytes(image.config)
    put_bytes(image.manifest)
    index_path = dest / "index.json"
    try:
        index = json.loads(index_path.read_text())
    except FileNotFoundError:
        index = {"schemaVersion": 2, "manifests": []}
    ref_key = "org.opencontainers.image.ref.name"
    kept = [m for m in index.get("manifests", [])
            if (m.get("annotations") or {}).get(ref_key) != tag]
    entry = Descriptor(MANIFEST_MEDIA_TYPE, image.digest, len(image.manifest)).to_json()
    entry["annotations"] = {ref_key: tag}
    index["manifests"] = [*kept, entry]
    _atomic_write(index_path, canonical(index))


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
