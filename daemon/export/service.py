"""``worker.export --to oci:DIR``: a prepared local worker as an OCI image layout (SPEC §14).

Checks come first and each fails with one line saying what to do: the worker must exist, be a
local (project) worker, and be prepared (marker present; a stopped worker is prepared by the
caller first). An overlay root's upper dir is the layer; a reflink/copy root is diffed against
the image rootfs it was copied from (daemon/export/diff.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from daemon.config.entries import WorkerKind
from daemon.errors import InvalidArgument, InvalidState
from daemon.export.diff import diff_root
from daemon.export.image import (
    BuiltImage,
    Descriptor,
    base_layer,
    build_image,
    write_oci_layout,
)
from daemon.export.layer import LayerBlob, write_layer
from daemon.export.push import PushClient, push_image
from daemon.export.upper import Change, UpperDirError, read_upper
from daemon.images import ImageStore
from daemon.images.manifest import Descriptor as ManifestDescriptor
from daemon.images.models import CachedImage
from daemon.images.registry import new_session
from daemon.images.store import image_errors
from daemon.sandboxes import SandboxLayout
from daemon.sandboxes.env import PLACED_FILES
from daemon.sandboxes.layout import RootMode
from daemon.sandboxes.provision import ROOT_MODE_FILE
from manifests import WorkerSpec
from manifests.reference import ImageReference, InvalidReference, parse_reference
from vmm_ffi.statefiles import write_atomic

OCI_PREFIX = "oci:"


@dataclass(frozen=True)
class ExportResult:
    digest: str
    size: int  # bytes of the added layer (compressed)
    layer_digest: str
    destination: str
    uploaded: int = 0  # blobs sent to the registry
    reused: int = 0  # blobs the registry had (or mounted from the base repository)


def parse_oci_destination(to: str) -> tuple[Path, str]:
    """``oci:DIR[:TAG]`` → (DIR, TAG); TAG defaults to ``latest``."""
    if not to.startswith(OCI_PREFIX) or len(to) == len(OCI_PREFIX):
        raise InvalidArgument(f"--to {to!r}: use oci:DIR (an OCI layout on disk) or a registry "
                              "reference")
    rest = to[len(OCI_PREFIX):]
    path, sep, tag = rest.rpartition(":")
    if not sep or "/" in tag:
        return Path(rest), "latest"
    return Path(path), tag


def check_exportable_kind(name: str, kind: WorkerKind) -> None:
    if kind is not WorkerKind.LOCAL:
        raise InvalidState(f"worker '{name}' is a {kind.value} worker; only workers added from "
                           "a project directory (`iii worker add ./dir`) can be exported")


def check_exportable(name: str, layout: SandboxLayout) -> None:
    """After prepare: the marker and a sandbox root are there."""
    if not layout.marker.is_file():
        raise InvalidState(f"worker '{name}' is not prepared (no successful install yet); run "
                           f"`iii worker start {name}` and export again")
    if layout.mode() is None:
        raise InvalidState(f"worker '{name}' has no sandbox root; run `iii worker start {name}` "
                           "and export again")


def read_changes(layout: SandboxLayout, image_rootfs: Path) -> list[Change]:
    """The sandbox's changes to its image: the overlay upper dir as it is, or a full-copy root
    (reflink/copy modes) diffed against the image rootfs it was copied from. Blocking."""
    if layout.mode() is RootMode.OVERLAY:
        changes = read_upper(layout.upper)
    else:
        # the copy is finished (renamed into place) before the mode file is written
        copied_ns = (layout.dir / ROOT_MODE_FILE).stat().st_mtime_ns
        changes = diff_root(layout.rootfs, image_rootfs, copied_ns)
    # The host's resolv.conf and CA bundle, placed at every start, stay on this host: the image
    # keeps its base's (a pod gets its resolv.conf from the kubelet, a container worker here
    # gets the host files placed again).
    return [c for c in changes if c.path not in PLACED_FILES]


ExportProgress = Callable[[str, str, int, int], None]  # (layer|push, message, done, total) bytes


def _quiet(phase: str, message: str, done: int, total: int) -> None:
    pass


async def export_to_oci(name: str, spec: WorkerSpec, layout: SandboxLayout, images: ImageStore,
                        to: str, progress: ExportProgress = _quiet) -> ExportResult:
    """Export to ``oci:DIR[:TAG]`` or push to a registry reference."""
    cached = images.lookup(spec.base_image)
    if cached is None:
        raise InvalidState(f"the base image {spec.base_image} of worker '{name}' is not cached; "
                           f"run `iii worker start {name}` first")
    if not to.startswith(OCI_PREFIX):
        target = parse_push_target(to)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=layout.dir) as tmp:
        work = Path(tmp)
        to_disk = to.startswith(OCI_PREFIX)
        config_bytes, layers = await base_manifest(images, cached, layout,
                                                   work if to_disk else None)
        image, layer, base = await _build(name, spec, layout, cached.path, config_bytes, layers,
                                          progress)
        blobs = {d.digest: work / d.digest.removeprefix("sha256:") for d in base}
        blobs[layer.digest] = layer.path
        if to_disk:
            dest, tag = parse_oci_destination(to)
            await asyncio.to_thread(write_oci_layout, dest, tag, image, blobs)
            return ExportResult(digest=image.digest, size=layer.size, layer_digest=layer.digest,
                                destination=f"{OCI_PREFIX}{dest}:{tag}")
        fetched = False

        async def local(digest: str) -> Path:
            nonlocal fetched
            if digest != layer.digest and not fetched:  # base blobs only when the target lacks one
                await images.base_blobs(cached, work)
                fetched = True
            return blobs[digest]

        source = parse_reference(cached.ref)
        async with new_session() as session:
            client = images.endpoint_client(session, target.canonical, PushClient)
            assert isinstance(client, PushClient)
            same_registry = source.registry == target.registry
            with image_errors(target.canonical):
                uploaded, reused = await push_image(
                    client, target.tag or "latest", image,
                    [*((d.digest, d.size) for d in base), (layer.digest, layer.size)], local,
                    source.repository if same_registry else None,
                    lambda message, done, total: progress("push", message, done, total))
    return ExportResult(digest=image.digest, size=layer.size, layer_digest=layer.digest,
                        destination=f"{target.registry}/{target.repository}@{image.digest}",
                        uploaded=uploaded, reused=reused)


def parse_push_target(to: str) -> ImageReference:
    try:
        ref = parse_reference(to)
    except InvalidReference as exc:
        raise InvalidArgument(f"--to {to!r}: {exc}; use oci:DIR or REGISTRY/REPO:TAG") from exc
    if ref.digest is not None:
        raise InvalidArgument(f"--to {to!r}: push to a tag, not a digest (the digest is the "
                              "result)")
    return ref


async def _build(name: str, spec: WorkerSpec, layout: SandboxLayout, image_rootfs: Path,
                 config_bytes: bytes, layers: list[ManifestDescriptor], progress: ExportProgress
                 ) -> tuple[BuiltImage, LayerBlob, list[Descriptor]]:
    marker = json.loads(layout.marker.read_bytes())
    fingerprint = str(marker.get("fingerprint", "")) if isinstance(marker, dict) else ""
    try:
        changes = await asyncio.to_thread(read_changes, layout, image_rootfs)
    except UpperDirError as exc:
        raise InvalidState(f"cannot export worker '{name}': {exc}") from exc
    layer = await asyncio.to_thread(cached_layer, layout, changes, progress)
    base = []
    for d in layers:
        kept = base_layer(d.mediaType, d.digest, d.size)
        if kept is None:
            raise InvalidState(f"the base image {spec.base_image} has a {d.mediaType} layer, "
                               "which export cannot re-publish (tar, tar+gzip and tar+zstd "
                               "layers it can); base the worker on another image")
        base.append(kept)
    labels = {"dev.iii.worker.name": name, "dev.iii.worker.kind": str(spec.kind),
              "dev.iii.worker.fingerprint": fingerprint}
    image = build_image(json.loads(config_bytes), base, layer, start=spec.scripts.start,
                        env=literal_env(spec.env), labels=labels)
    return image, layer, base


BASE_CACHE = "export-base.json"


class _BaseCache(msgspec.Struct, frozen=True):
    digest: str  # the base image's manifest digest the rest was read from
    config: str
    layers: list[ManifestDescriptor]


async def base_manifest(images: ImageStore, cached: CachedImage, layout: SandboxLayout,
                        dest: Path | None) -> tuple[bytes, list[ManifestDescriptor]]:
    """The base image's config bytes and layer descriptors. A push of an image whose base the
    target already has needs no base blob, so when ``dest`` is None they come from a copy kept
    beside the sandbox: a manifest pinned by digest never changes, and asking the base's
    registry again (Docker Hub: a token and two round trips) would dominate a re-export."""
    path = layout.dir / BASE_CACHE
    if dest is None:
        try:
            saved = msgspec.json.decode(path.read_bytes(), type=_BaseCache)
            if saved.digest == cached.digest:
                return saved.config.encode(), saved.layers
        except (OSError, msgspec.DecodeError, UnicodeError):
            pass  # absent or unreadable: ask the registry
    config_bytes, layers = await images.base_blobs(cached, dest)
    try:
        text = config_bytes.decode()
    except UnicodeDecodeError:
        return config_bytes, layers  # not UTF-8 JSON: never cached
    await asyncio.to_thread(write_atomic, path, msgspec.json.encode(
        _BaseCache(digest=cached.digest, config=text, layers=layers)))
    return config_bytes, layers


LAYER_CACHE = "export-layer.tar.gz"
LAYER_CACHE_INFO = "export-layer.json"


def cached_layer(layout: SandboxLayout, changes: list[Change],
                 progress: ExportProgress = _quiet) -> LayerBlob:
    """The layer for ``changes``, rebuilt only when the upper dir changed since the last export.

    Re-export of an unchanged worker is then a stat walk plus registry HEADs (issue 13's goal:
    <= 10% of the first export); compressing the layer again would dominate it. The key covers
    every field the layer is made of plus each entry's ctime, which any write, chmod or chown
    moves (and which the workload cannot set back)."""
    key = hashlib.sha256(repr([dataclasses.astuple(c) for c in changes]).encode()).hexdigest()
    blob, info = layout.dir / LAYER_CACHE, layout.dir / LAYER_CACHE_INFO
    try:
        saved = json.loads(info.read_text())
        if saved.get("key") == key and blob.stat().st_size == saved["size"]:
            return LayerBlob(path=blob, digest=saved["digest"], diff_id=saved["diff_id"],
                             size=saved["size"], uncompressed_size=saved["uncompressed_size"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass  # no usable cache: build
    info.unlink(missing_ok=True)  # never pair a new blob with an old description
    tmp = layout.dir / f".{LAYER_CACHE}.tmp"
    total = sum(c.size for c in changes)
    built = write_layer(changes, tmp, lambda done: progress(
        "layer", f"{len(changes)} entries of the sandbox root", done, total))
    os.replace(tmp, blob)
    info.write_text(json.dumps({"key": key, "digest": built.digest, "diff_id": built.diff_id,
                                "size": built.size,
                                "uncompressed_size": built.uncompressed_size}))
    return LayerBlob(path=blob, digest=built.digest, diff_id=built.diff_id, size=built.size,
                     uncompressed_size=built.uncompressed_size)


def literal_env(env: dict[str, str]) -> dict[str, str]:
    """Manifest env values safe to bake in: ``${VAR}`` expansions come from the host's
    environment or config entries, i.e. possibly secrets, and are left out."""
    return {k: v for k, v in env.items() if "${" not in v}
