"""The rootfs cache: ``$III_HOME/rootfs/<slug>/``, complete only once renamed into place.

A pull works in ``rootfs/.tmp-<slug>-<random>/`` (blobs + the growing root) and renames the root
to ``rootfs/<slug>`` as its very last step, so a crash or ``kill -9`` never leaves a directory
that looks complete; stale temp dirs are removed when a store is created. Concurrent pulls of
one ref share the work: in one process through an ``asyncio.Lock`` per slug, across processes
through an ``flock`` on ``rootfs/.<slug>.lock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp

from daemon.errors import ImageError
from daemon.images.auth import load_credentials
from daemon.images.errors import PullFailure, RegistryError
from daemon.images.manifest import Descriptor
from daemon.images.models import (
    CachedImage,
    ExtractLimits,
    image_config_from_blob,
)
from daemon.images.pull import ImagePuller, ProgressCallback
from daemon.images.registry import RegistryClient
from daemon.images.settings import RegistrySettings
from daemon.images.slug import image_slug
from daemon.trees import remove_tree
from manifests.reference import ImageReference, InvalidReference, parse_reference

log = logging.getLogger(__name__)

CONFIG_FILE = ".oci-config.json"
DIGEST_FILE = ".oci-digest"
INFO_FILE = ".oci-image.json"
TEMP_PREFIX = ".tmp-"
LOCK_POLL_S = 0.05


def unreachable_hint(ref: str, exc: PullFailure) -> str | None:
    """How to get a Docker Hub image when Docker Hub cannot be reached (build machines often
    cannot): a mirror. Only for connection failures, not for 404s or bad credentials."""
    if not ref.startswith("docker.io/") or not isinstance(exc, RegistryError) \
            or exc.status is not None:
        return None
    return ("Docker Hub is unreachable from here: set III_REGISTRY_MIRROR=host:port (or "
            "registry_mirror in daemon.yaml) to a registry that serves this image")


@contextlib.contextmanager
def image_errors(ref: str) -> Iterator[None]:
    """The boundary: every pipeline or filesystem failure becomes one ImageError naming ``ref``."""
    try:
        yield
    except PullFailure as exc:
        raise ImageError(ref, str(exc), unreachable_hint(ref, exc)) from exc
    except OSError as exc:
        raise ImageError(ref, f"writing the rootfs cache failed: {exc.strerror or exc}") from exc


class ImageStore:
    """Pulls images into ``home/rootfs`` and finds them there.

    >>> store = ImageStore(home, RegistrySettings.from_env())
    >>> image = await store.pull("busybox")      # ImageError on any failure
    >>> image.path / ".oci-config.json"
    """

    def __init__(self, home: Path, settings: RegistrySettings, *,
                 limits: ExtractLimits | None = None, platform: str | None = None) -> None:
        self.rootfs = home / "rootfs"
        self.rootfs.mkdir(parents=True, exist_ok=True)
        self._puller = ImagePuller(settings, limits or ExtractLimits(), platform)
        self._locks: dict[str, asyncio.Lock] = {}
        self._generation: dict[str, int] = {}
        self.remove_stale_temp_dirs()

    # ------------------------------------------------------------------ reading the cache

    def lookup(self, ref: str) -> CachedImage | None:
        """The cached image for ``ref``, or None when it was never (completely) pulled."""
        parsed = self._parse(ref)
        return self._read(self.rootfs / image_slug(parsed.canonical))

    def list_images(self) -> list[CachedImage]:
        """Every complete image in the cache, sorted by ref."""
        found = []
        for entry in self.rootfs.iterdir():
            if not entry.name.startswith(".") and entry.is_dir():
                image = self._read(entry)
                if image is not None:
                    found.append(image)
        return sorted(found, key=lambda i: i.ref)

    @staticmethod
    def _parse(ref: str) -> ImageReference:
        try:
            return parse_reference(ref)
        except InvalidReference as exc:
            raise ImageError(ref, str(exc)) from exc

    @staticmethod
    def _read(path: Path) -> CachedImage | None:
        try:
            info = json.loads((path / INFO_FILE).read_text())
            digest = (path / DIGEST_FILE).read_text().strip()
            config = image_config_from_blob(json.loads((path / CONFIG_FILE).read_bytes()))
            return CachedImage(ref=str(info["ref"]), digest=digest, slug=path.name, path=path,
                               size_bytes=int(info.get("size_bytes", 0)), config=config)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # absent or not written by a complete pull: not cached

    async def base_blobs(self, image: CachedImage, dest: Path | None
                         ) -> tuple[bytes, list[Descriptor]]:
        """Config and layer descriptors of the cached ``image`` as its registry published them
        (pinned by the cached digest), layer blobs downloaded into ``dest`` (unless None).
        ImageError on failure."""
        parsed = dataclasses.replace(self._parse(image.ref), tag=None, digest=image.digest)
        with image_errors(image.ref):
            return await self._puller.fetch_layer_blobs(parsed, dest)

    def endpoint_client(self, session: aiohttp.ClientSession, ref: str,
                        factory: type[RegistryClient] = RegistryClient) -> RegistryClient:
        """A client for ``ref``'s own registry (never the mirror: pushes go to the origin) with
        the same insecure-host and credential rules as pulls."""
        parsed = self._parse(ref)
        ep = next(e for e in self._puller.endpoints(parsed) if not e.is_mirror)
        return factory(session, scheme=ep.scheme, host=ep.host, repository=parsed.repository,
                       credentials=load_credentials(self._puller.settings.docker_config,
                                                    ep.credentials_key))

    # ------------------------------------------------------------------ pulling

    async def pull(self, ref: str, *, refresh: bool = False,
                   progress: ProgressCallback | None = None) -> CachedImage:
        """Return the cached image for ``ref``, pulling it first when absent (or ``refresh``).

        A pull that is already running for the same ref (here or in another process) is
        waited for and its result reused. Raises ImageError naming the ref; the cache is then
        exactly as before.
        """
        parsed = self._parse(ref)
        canonical = parsed.canonical
        slug = image_slug(canonical)
        lock = self._locks.setdefault(slug, asyncio.Lock())
        seen = self._generation.get(slug, 0)
        async with lock:
            finished_meanwhile = self._generation.get(slug, 0) != seen
            if not refresh or finished_meanwhile:
                cached = self._read(self.rootfs / slug)
                if cached is not None:
                    return cached
            with image_errors(canonical):
                async with self._process_lock(slug):
                    cached = None if refresh else self._read(self.rootfs / slug)
                    if cached is None:
                        cached = await self._pull_locked(parsed, slug, progress)
            self._generation[slug] = self._generation.get(slug, 0) + 1
            return cached

    async def _pull_locked(self, ref: ImageReference, slug: str,
                           progress: ProgressCallback | None) -> CachedImage:
        work = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{slug}-", dir=self.rootfs))
        try:
            pulled = await self._puller.pull_into(ref, work, progress)
            root = work / "root"
            root_mode = stat.S_IMODE(root.stat().st_mode)
            os.chmod(root, root_mode | stat.S_IWUSR)  # the image may make / read-only
            (root / CONFIG_FILE).write_bytes(pulled.config)
            (root / DIGEST_FILE).write_text(pulled.digest + "\n")
            (root / INFO_FILE).write_text(json.dumps(
                {"ref": ref.canonical, "digest": pulled.digest, "size_bytes": pulled.size_bytes}))
            os.chmod(root, root_mode)
            final = self.rootfs / slug
            if final.exists():
                # Refresh: move the old tree into the work dir (removed with it below).
                os.rename(final, work / "previous")
            os.rename(root, final)
            self._sync_dir()
        finally:
            await asyncio.to_thread(remove_tree, work)
        image = self._read(final)
        if image is None:
            raise PullFailure("the pulled rootfs could not be read back")
        return image

    def _sync_dir(self) -> None:
        fd = os.open(self.rootfs, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.asynccontextmanager
    async def _process_lock(self, slug: str) -> AsyncIterator[None]:
        # Polled rather than blocking in a thread: a cancelled waiter must not acquire later.
        fd = os.open(self.rootfs / f".{slug}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(LOCK_POLL_S)
            yield
        finally:
            os.close(fd)

    def remove_stale_temp_dirs(self) -> list[str]:
        """Remove temp dirs of pulls that died (their slug's lock is free); return their names."""
        removed = []
        for entry in self.rootfs.iterdir():
            if not entry.name.startswith(TEMP_PREFIX):
                continue
            slug = entry.name[len(TEMP_PREFIX):].rsplit("-", 1)[0]
            fd = os.open(self.rootfs / f".{slug}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live pull in another process owns it
                remove_tree(entry)
                removed.append(entry.name)
            finally:
                os.close(fd)
        if removed:
            log.info("removed %d interrupted pull(s) from %s", len(removed), self.rootfs)
        return removed
