"""The pull pipeline: resolve a reference, pick the platform, download layers concurrently
(bounded) to temp files and apply them in order as soon as each one is in, in a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp

from daemon.images.auth import load_credentials
from daemon.images.errors import ManifestError, PullFailure, RegistryError
from daemon.images.extract import LayerExtractor
from daemon.images.manifest import (
    Descriptor,
    ImageIndex,
    ImageManifest,
    check_config_platform,
    decode_manifest,
    host_platform,
    select_platform,
)
from daemon.images.models import ExtractLimits, PullProgress
from daemon.images.registry import RegistryClient, new_session
from daemon.images.settings import RegistrySettings
from manifests.reference import DOCKER_HUB, ImageReference

T = TypeVar("T")
ProgressCallback = Callable[[PullProgress], None]

DOCKER_HUB_ORIGIN = "registry-1.docker.io"
MAX_CONFIG_BYTES = 4 << 20
PROGRESS_INTERVAL_S = 0.1
PROGRESS_BYTES = 8 << 20


@dataclass(frozen=True)
class PulledImage:
    digest: str
    config: bytes
    size_bytes: int


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    credentials_key: str
    is_mirror: bool = False


class _ProgressTracker:
    """Turns byte deltas and layer events into throttled :class:`PullProgress` reports."""

    def __init__(self, callback: ProgressCallback | None, layers: list[Descriptor]) -> None:
        self._callback = callback
        self._total = sum(d.size for d in layers)
        self._layers = len(layers)
        self.pulled = self.pulled_layers = self.extracted = self.extracted_layers = 0
        self._last_emit = 0.0
        self._last_bytes = 0

    def on_bytes(self, delta: int) -> None:
        self.pulled += delta
        now = time.monotonic()
        if (now - self._last_emit >= PROGRESS_INTERVAL_S
                or self.pulled - self._last_bytes >= PROGRESS_BYTES):
            self._emit("pull")

    def layer_pulled(self) -> None:
        self.pulled_layers += 1
        self._emit("pull")

    def layer_extracted(self, size: int) -> None:
        self.extracted += size
        self.extracted_layers += 1
        self._emit("extract")

    def _emit(self, phase: str) -> None:
        self._last_emit, self._last_bytes = time.monotonic(), self.pulled
        if self._callback is None:
            return
        if phase == "pull":
            report = PullProgress(phase="pull", bytes_done=self.pulled, bytes_total=self._total,
                                  layers_done=self.pulled_layers, layers_total=self._layers)
        else:
            report = PullProgress(phase="extract", bytes_done=self.extracted,
                                  bytes_total=self._total, layers_done=self.extracted_layers,
                                  layers_total=self._layers)
        self._callback(report)


async def run_in_thread(fn: Callable[[], T], stop: threading.Event) -> T:
    """``to_thread`` that, when cancelled, tells ``fn`` to stop and waits for the thread, so
    nobody deletes a directory the thread is still writing to."""
    future = asyncio.get_running_loop().run_in_executor(None, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.wait([future])
        if not future.cancelled():
            # The thread's "cancelled" error is expected; left unretrieved it would be logged
            # (with a traceback) whenever the future happens to be garbage collected.
            future.exception()
        raise


def _first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, asyncio.CancelledError):
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if isinstance(exc, PullFailure):
            return exc
    return leaves[0] if leaves else group


class ImagePuller:
    """Pulls one reference into a work directory (``work/root`` becomes the rootfs)."""

    def __init__(self, settings: RegistrySettings, limits: ExtractLimits,
                 platform: str | None = None) -> None:
        self._settings = settings
        self.settings = settings
        self._limits = limits
        self._platform = platform or host_platform()

    def endpoints(self, ref: ImageReference) -> list[Endpoint]:
        """Where to look, in order: the mirror first for Docker Hub refs, then the origin."""
        found = []
        if ref.registry == DOCKER_HUB:
            if self._settings.mirror:
                mirror = self._settings.mirror.rstrip("/")
                scheme, sep, host = mirror.partition("://")
                if not sep:
                    host = mirror
                    scheme = "http" if self._settings.is_plain_http(host) else "https"
                found.append(Endpoint(scheme, host, host, is_mirror=True))
            found.append(Endpoint("https", DOCKER_HUB_ORIGIN, DOCKER_HUB))
        else:
            scheme = "http" if self._settings.is_plain_http(ref.registry) else "https"
            found.append(Endpoint(scheme, ref.registry, ref.registry))
        return found

    async def pull_into(self, ref: ImageReference, work: Path,
                        progress: ProgressCallback | None) -> PulledImage:
        """Resolve, download and extract into ``work/root``. Raises :class:`PullFailure`."""
        async with new_session() as session:
            client, digest, manifest, config = await self._platform_manifest(session, ref)
            size = await self._fetch_layers(client, manifest.layers, work, progress)
        return PulledImage(digest=digest, config=config, size_bytes=size)

    async def fetch_layer_blobs(self, ref: ImageReference, dest: Path | None
                                ) -> tuple[bytes, list[Descriptor]]:
        """The config blob and layer descriptors of ``ref`` for this platform, each layer's
        compressed blob downloaded to ``dest/<hex>`` (kept when already there). Used by export,
        which must ship the base layers exactly as published (the cache keeps only the tree);
        pin ``ref`` by digest so a moved tag cannot change the base under the sandbox. With
        ``dest`` None nothing is downloaded (a push checks the target registry first)."""
        async with new_session() as session:
            client, _, manifest, config = await self._platform_manifest(session, ref)
            for i, desc in enumerate(manifest.layers if dest is not None else []):
                assert dest is not None
                path = dest / desc.digest.removeprefix("sha256:")
                if not path.exists():
                    await client.download_blob(
                        desc.digest, desc.size, path,
                        f"downloading base layer {i + 1}/{len(manifest.layers)}",
                        lambda _delta: None)
        return config, list(manifest.layers)

    async def _platform_manifest(self, session: aiohttp.ClientSession, ref: ImageReference
                                 ) -> tuple[RegistryClient, str, ImageManifest, bytes]:
        client, media_type, body, digest = await self._resolve(session, ref)
        manifest = decode_manifest(media_type, body)
        if isinstance(manifest, ImageIndex):
            entry = select_platform(manifest, self._platform)
            media_type, body, _ = await client.get_manifest(entry.digest)
            manifest = decode_manifest(media_type or entry.mediaType, body)
            if not isinstance(manifest, ImageManifest):
                raise ManifestError(f"index entry {entry.digest} is itself an index")
        config = await client.get_blob_bytes(manifest.config.digest, MAX_CONFIG_BYTES,
                                             "fetching the image config")
        try:
            check_config_platform(json.loads(config), self._platform)
        except ValueError as exc:
            raise ManifestError(f"image config is not valid JSON: {exc}") from exc
        return client, digest, manifest, config

    async def _resolve(self, session: aiohttp.ClientSession, ref: ImageReference
                       ) -> tuple[RegistryClient, str, bytes, str]:
        failures: list[str] = []
        endpoints = self.endpoints(ref)
        for n, ep in enumerate(endpoints):
            client = RegistryClient(
                session, scheme=ep.scheme, host=ep.host, repository=ref.repository,
                credentials=load_credentials(self._settings.docker_config, ep.credentials_key))
            try:
                media_type, body, digest = await client.get_manifest(ref.reference)
                return client, media_type, body, digest
            except (RegistryError, ManifestError) as exc:
                if n == len(endpoints) - 1:
                    if failures:
                        raise type(exc)(f"{exc} (mirror: {'; '.join(failures)})") from exc
                    raise
                failures.append(f"{ep.host}: {exc}")
        raise AssertionError("unreachable")

    async def _fetch_layers(self, client: RegistryClient, layers: list[Descriptor], work: Path,
                            progress: ProgressCallback | None) -> int:
        blobs, root = work / "blobs", work / "root"
        blobs.mkdir()
        root.mkdir()
        stop = threading.Event()
        extractor = LayerExtractor(root, self._limits, stop)
        tracker = _ProgressTracker(progress, layers)
        semaphore = asyncio.Semaphore(self._settings.concurrency)
        names = [f"layer {i + 1}/{len(layers)} ({d.digest[:19]}…)" for i, d in enumerate(layers)]

        async def download(i: int, desc: Descriptor) -> Path:
            async with semaphore:
                path = blobs / str(i)
                await client.download_blob(desc.digest, desc.size, path,
                                           f"downloading {names[i]}", tracker.on_bytes)
                tracker.layer_pulled()
                return path

        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(download(i, d)) for i, d in enumerate(layers)]
                for i, task in enumerate(tasks):
                    path = await task
                    await run_in_thread(functools.partial(extractor.apply, path, names[i]), stop)
                    path.unlink()
                    tracker.layer_extracted(layers[i].size)
        except BaseExceptionGroup as group:
            raise _first_failure(group) from None
        return await run_in_thread(extractor.finish, stop)
