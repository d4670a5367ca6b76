"""Push an exported image to a registry: blobs first (skipped when present), the tag last.

A blob the registry already has is never uploaded: ``HEAD`` answers 200, or a cross-repository
mount from the base image's repository on the same registry succeeds (201). Only then are the
missing blobs uploaded (one monolithic ``POST`` + ``PUT`` each), and the manifest is ``PUT`` by
tag as the very last request, so a push that fails half-way leaves no tag pointing at missing
blobs. Auth, retries and error wording are :class:`daemon.images.registry.RegistryClient`'s (the
same docker config credentials, bearer and Basic flows as pulls).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import aiohttp

from daemon.export.image import MANIFEST_MEDIA_TYPE, BuiltImage, digest_of
from daemon.images.errors import RegistryError
from daemon.images.registry import (
    MANIFEST_ACCEPT,
    RegistryClient,
    map_client_errors,
    with_retries,
)

UPLOAD_CHUNK = 1 << 20
ERROR_BODY_LIMIT = 64 << 10
SHA256_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class PushClient(RegistryClient):
    """RegistryClient plus the write half of the distribution API (and a manifest HEAD)."""

    async def _send(self, method: str, url: str, what: str, *, data: object = None,
                    headers: Mapping[str, str] | None = None, ok: tuple[int, ...] = (200, 201)
                    ) -> aiohttp.ClientResponse | None:
        """One request with auth (a 401 challenge answered once). Returns the response for an
        ``ok`` status, None for 404, raises RegistryError otherwise."""
        for challenged in (False, True):
            h = dict(headers or {})
            if self._authorization:
                h["Authorization"] = self._authorization
            with map_client_errors(what):
                resp = await self._session.request(method, url, headers=h, data=data)
            if resp.status == 401 and not challenged and data is None:
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.release()
                await self._authenticate(challenge, what)
                continue
            if resp.status in ok:
                return resp
            body = b"" if method == "HEAD" else await resp.content.read(ERROR_BODY_LIMIT)
            resp.release()
            if resp.status == 404 and method == "HEAD":
                return None
            raise self._push_error(resp.status, what, body)
        raise AssertionError("unreachable")

    def _push_error(self, status: int, what: str, body: bytes) -> RegistryError:
        """The status error, plus what the registry said (its ``errors[].message`` and
        ``detail``) when it says more than a status code; a full disk is named as such."""
        error = self._status_error(status, what)
        said = body.decode(errors="replace")
        if "no space left on device" in said.lower():
            return RegistryError(f"{error}: the registry is out of disk space (no space left on "
                                 "device); free space there and export again, nothing was "
                                 "tagged", status=status)
        try:
            first = json.loads(said)["errors"][0]
            detail = f"{first.get('message', '')} {first.get('detail') or ''}".strip()
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return error
        return RegistryError(f"{error}: {detail[:200]}", status=status) if detail else error

    def _url(self, path: str) -> str:
        return f"{self._base}{path}"

    async def manifest_digest(self, tag: str) -> str:
        """The digest ``tag`` names now, found as ``crane digest`` finds it: the HEAD's
        ``Docker-Content-Digest`` (a HEAD is not counted against pull limits), else the sha256
        of the manifest a GET returns. An index is answered with the index's digest: the node
        that runs the image picks its platform. RegistryError when the registry cannot say."""
        what = f"resolving tag {tag}"

        async def head() -> str:
            resp = await self._send("HEAD", self._url(f"/manifests/{tag}"), what,
                                    headers={"Accept": MANIFEST_ACCEPT}, ok=(200,))
            if resp is None:
                raise self._status_error(404, what)
            resp.release()
            return resp.headers.get("Docker-Content-Digest", "").strip()

        try:
            digest = await with_retries(head)
        except RegistryError as exc:
            if exc.status in (None, 401, 403, 404):
                raise  # unreachable or refused: a GET would be answered the same
            digest = ""  # some registries refuse HEAD on manifests: ask with a GET
        if SHA256_DIGEST.match(digest):
            return digest
        _, _, digest = await self.get_manifest(tag)
        return digest

    async def has_blob(self, digest: str) -> bool:
        what = f"checking blob {digest[:19]}…"

        async def attempt() -> bool:
            resp = await self._send("HEAD", self._url(f"/blobs/{digest}"), what)
            if resp is None:
                return False
            resp.release()
            return True

        return await with_retries(attempt)

    async def mount_blob(self, digest: str, source_repository: str) -> str | None:
        """Mount ``digest`` from another repository of this registry. None when mounted,
        else the upload URL the registry opened instead (it may not have the blob there)."""
        what = f"mounting blob {digest[:19]}… from {source_repository}"
        resp = await self._send("POST", self._url(f"/blobs/uploads/?mount={digest}"
                                                  f"&from={source_repository}"), what,
                                ok=(201, 202))
        assert resp is not None
        location = resp.headers.get("Location", "")
        status = resp.status
        resp.release()
        return None if status == 201 else self._absolute(location)

    async def start_upload(self) -> str:
        resp = await self._send("POST", self._url("/blobs/uploads/"), "starting an upload",
                                ok=(202,))
        assert resp is not None
        location = resp.headers.get("Location", "")
        resp.release()
        if not location:
            raise RegistryError(f"{self.host} opened an upload without a Location header")
        return self._absolute(location)

    def _absolute(self, location: str) -> str:
        if location.startswith(("http://", "https://")):
            return location
        return self._base.split("/v2/", 1)[0] + location

    async def upload_blob(self, digest: str, path: Path, location: str | None = None,
                          sent: Callable[[int], None] = lambda n: None) -> None:
        """One monolithic PUT of ``path``; ``sent(n)`` after each chunk leaves (progress)."""
        what = f"uploading blob {digest[:19]}…"
        url = location or await self.start_upload()
        sep = "&" if "?" in url else "?"

        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as f:
                while chunk := await asyncio.to_thread(f.read, UPLOAD_CHUNK):
                    yield chunk
                    sent(len(chunk))

        resp = await self._send("PUT", f"{url}{sep}digest={digest}", what, data=chunks(),
                                headers={"Content-Type": "application/octet-stream",
                                         "Content-Length": str(path.stat().st_size)})
        assert resp is not None
        resp.release()

    async def upload_bytes(self, data: bytes, location: str | None = None) -> None:
        digest = digest_of(data)
        url = location or await self.start_upload()
        sep = "&" if "?" in url else "?"
        resp = await self._send("PUT", f"{url}{sep}digest={digest}", f"uploading {digest[:19]}…",
                                data=data, headers={"Content-Type": "application/octet-stream"})
        assert resp is not None
        resp.release()

    async def put_manifest(self, tag: str, manifest: bytes) -> None:
        resp = await self._send("PUT", self._url(f"/manifests/{tag}"), f"tagging {tag}",
                                data=manifest, headers={"Content-Type": MANIFEST_MEDIA_TYPE})
        assert resp is not None
        resp.release()


async def push_image(client: PushClient, tag: str, image: BuiltImage, layers: list[tuple[str, int]],
                     local: Callable[[str], Awaitable[Path]], source_repository: str | None,
                     progress: Callable[[str, int, int], None] = lambda m, d, t: None
                     ) -> tuple[int, int]:
    """Push ``layers`` ((digest, size), base first), the config and the manifest as ``tag``.

    The registry is asked about every blob at once (one HEAD first, so a token is fetched only
    once, then the rest concurrently): re-pushing an unchanged image is those HEADs and the
    manifest PUT. ``local(digest)`` returns a file holding a blob the registry lacks (base
    blobs are downloaded only then). ``progress(message, bytes sent, bytes to send)``.
    Returns (blobs uploaded, blobs reused)."""
    digests = [d for d, _ in layers] + [image.config_digest]
    first = await client.has_blob(digests[0])
    rest = await asyncio.gather(*(client.has_blob(d) for d in digests[1:]))
    present = dict(zip(digests, [first, *rest], strict=True))
    missing = [(d, size) for d, size in layers if not present[d]]
    reused = len(layers) - len(missing)
    total = sum(size for _, size in missing)
    done = 0

    def sent(n: int) -> None:
        nonlocal done
        done += n
        progress(message, done, total)

    uploaded = 0
    for i, (digest, _size) in enumerate(missing, 1):
        message = f"blob {i}/{len(missing)} ({digest[7:19]})"
        location = None
        if source_repository and source_repository != client.repository:
            location = await client.mount_blob(digest, source_repository)
            if location is None:
                reused += 1
                sent(_size)
                continue
        await client.upload_blob(digest, await local(digest), location, sent)
        uploaded += 1
    if not present[image.config_digest]:
        await client.upload_bytes(image.config)
    await client.put_manifest(tag, image.manifest)  # last: the tag only names complete data
    progress("tagged", total, total)
    return uploaded, reused
