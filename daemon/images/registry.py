"""A client for one repository on one OCI distribution registry, on aiohttp.

Handles the anonymous/credentialed bearer-token flow (401 + ``WWW-Authenticate`` → token →
retry) and Basic auth, retries transient failures (connection errors, 5xx, 429) with backoff
but never other 4xx, and verifies every blob's sha256 while streaming it to disk.
aiohttp and OS errors are translated once, by :func:`map_client_errors`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import aiohttp
from yarl import URL

from daemon.images.auth import Credentials, parse_challenge
from daemon.images.errors import DigestMismatch, ManifestError, RegistryError

T = TypeVar("T")

CONNECT_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 60.0
TOKEN_TIMEOUT_S = 30.0
ATTEMPTS = 3
BACKOFF_S = (0.5, 2.0)
CHUNK_BYTES = 1 << 20
MAX_MANIFEST_BYTES = 4 << 20

MANIFEST_ACCEPT = (
    "application/vnd.oci.image.index.v1+json, "
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)


def new_session() -> aiohttp.ClientSession:
    """One session per pull; system CAs (the host bundle) and proxy env vars are honoured."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S,
                                    sock_read=READ_TIMEOUT_S)
    return aiohttp.ClientSession(timeout=timeout, trust_env=True,
                                 headers={"User-Agent": "iii-sandbox-workers"})


@contextmanager
def map_client_errors(what: str) -> Iterator[None]:
    """Translate aiohttp/OS/timeout errors raised inside the block into :class:`RegistryError`."""
    try:
        yield
    except aiohttp.ClientResponseError as exc:
        raise RegistryError(f"{what}: HTTP {exc.status} {exc.message}",
                            transient=exc.status >= 500, status=exc.status) from exc
    except aiohttp.ClientPayloadError as exc:  # its text carries aiohttp's internal codes
        raise RegistryError(f"{what}: the connection dropped mid-transfer", transient=True
                            ) from exc
    except aiohttp.ClientConnectionError as exc:
        raise RegistryError(f"{what}: {exc or type(exc).__name__}", transient=True) from exc
    except TimeoutError as exc:
        raise RegistryError(f"{what}: timed out", transient=True) from exc
    except aiohttp.ClientError as exc:
        raise RegistryError(f"{what}: {exc}") from exc
    except OSError as exc:
        raise RegistryError(f"{what}: {exc.strerror or exc}") from exc


async def with_retries(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt`` up to :data:`ATTEMPTS` times while it raises transient RegistryErrors."""
    for n in range(ATTEMPTS):
        try:
            return await attempt()
        except RegistryError as exc:
            if not exc.transient:
                raise
            if n == ATTEMPTS - 1:
                raise RegistryError(f"{exc} (after {ATTEMPTS} attempts)", transient=True,
                                    status=exc.status) from exc
            await asyncio.sleep(BACKOFF_S[min(n, len(BACKOFF_S) - 1)])
    raise AssertionError("unreachable")


def _sha256_hex(digest: str) -> str:
    algo, _, hexd = digest.partition(":")
    if algo != "sha256" or len(hexd) != 64:
        raise ManifestError(f"unsupported digest {digest!r} (only sha256 is supported)")
    return hexd


class RegistryClient:
    """Pull-side access to ``repository`` on ``host`` (``host[:port]``) over ``scheme``."""

    def __init__(self, session: aiohttp.ClientSession, *, scheme: str, host: str,
                 repository: str, credentials: Credentials | None) -> None:
        self._session = session
        self.host, self.repository = host, repository
        self._base = f"{scheme}://{host}/v2/{repository}"
        self._credentials = credentials
        self._authorization: str | None = None
        if credentials is not None and credentials.registry_token:
            self._authorization = f"Bearer {credentials.registry_token}"

    # ------------------------------------------------------------------ requests and auth

    async def _open(self, path: str, what: str, accept: str | None = None
                    ) -> aiohttp.ClientResponse:
        """GET ``path`` with auth; answer a 401 challenge once; raise for non-2xx statuses."""
        for challenged in (False, True):
            headers = {"Accept": accept} if accept else {}
            if self._authorization:
                headers["Authorization"] = self._authorization
            with map_client_errors(what):
                resp = await self._session.get(f"{self._base}{path}", headers=headers)
            if resp.status == 401 and not challenged:
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.release()
                await self._authenticate(challenge, what)
                continue
            if resp.status < 300:
                return resp
            resp.release()
            raise self._status_error(resp.status, what)
        raise AssertionError("unreachable")

    def _status_error(self, status: int, what: str) -> RegistryError:
        where = f"{self.host}/{self.repository}"
        if status == 401:
            hint = ("the credentials for it in the docker config were rejected"
                    if self._credentials else
                    f"add credentials for {self.host} to ~/.docker/config.json (docker login)")
            return RegistryError(f"{what}: {where} requires authentication; {hint}", status=401)
        if status == 403:
            return RegistryError(f"{what}: access to {where} denied (HTTP 403)", status=403)
        if status == 404:
            return RegistryError(f"{what}: not found in {where} (HTTP 404)", status=404)
        transient = status >= 500 or status == 429
        return RegistryError(f"{what}: HTTP {status} from {where}", transient=transient,
                             status=status)

    async def _authenticate(self, header: str, what: str) -> None:
        challenge = parse_challenge(header)
        if challenge.scheme == "basic":
            basic = self._credentials.basic_header() if self._credentials else None
            if basic is None:
                raise self._status_error(401, what)
            self._authorization = basic
            return
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise RegistryError(f"{what}: {self.host} sent an unusable auth challenge {header!r}")
        params = {"scope": challenge.params.get("scope", f"repository:{self.repository}:pull")}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        headers = {}
        basic = self._credentials.basic_header() if self._credentials else None
        if basic:
            headers["Authorization"] = basic
        token_what = f"{what}: getting a token from {challenge.params['realm']}"
        with map_client_errors(token_what):
            url = URL(challenge.params["realm"]).update_query(params)
            async with self._session.get(url, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=TOKEN_TIMEOUT_S)
                                         ) as resp:
                if resp.status in (401, 403):
                    raise self._status_error(401, what)
                if resp.status >= 300:
                    raise RegistryError(f"{token_what}: HTTP {resp.status}",
                                        transient=resp.status >= 500, status=resp.status)
                body = await resp.json(content_type=None)
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise RegistryError(f"{token_what}: the answer holds no token")
        self._authorization = f"Bearer {token}"

    # ------------------------------------------------------------------ manifests and blobs

    async def get_manifest(self, reference: str) -> tuple[str, bytes, str]:
        """Fetch a manifest or index by tag or digest → (media type, raw bytes, digest)."""
        what = f"fetching manifest {reference}"

        async def attempt() -> tuple[str, bytes, str]:
            resp = await self._open(f"/manifests/{reference}", what, accept=MANIFEST_ACCEPT)
            with map_client_errors(what):
                async with resp:
                    body = await self._read_limited(resp, MAX_MANIFEST_BYTES, what)
                    content_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
            return content_type, body, body_digest(body)

        media_type, body, digest = await with_retries(attempt)
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatch(f"manifest {reference} from {self.host} hashes to {digest}")
        if media_type in ("", "application/json", "text/plain"):
            try:
                media_type = str(json.loads(body).get("mediaType") or "")
            except (ValueError, AttributeError):
                media_type = ""
        return media_type, body, digest

    async def get_blob_bytes(self, digest: str, limit: int, what: str) -> bytes:
        """A small blob (an image config) in memory, verified."""
        hexd = _sha256_hex(digest)

        async def attempt() -> bytes:
            resp = await self._open(f"/blobs/{digest}", what)
            with map_client_errors(what):
                async with resp:
                    return await self._read_limited(resp, limit, what)

        body = await with_retries(attempt)
        if hashlib.sha256(body).hexdigest() != hexd:
            raise DigestMismatch(f"{what}: content does not match digest {digest}")
        return body

    async def download_blob(self, digest: str, size: int, dest: Path, what: str,
                            on_bytes: Callable[[int], None]) -> None:
        """Stream a blob to ``dest``, hashing as it arrives; ``on_bytes`` gets byte deltas
        (negative when a failed attempt is rolled back). Raises DigestMismatch/RegistryError."""
        hexd = _sha256_hex(digest)

        async def attempt() -> None:
            done = 0
            hasher = hashlib.sha256()
            try:
                resp = await self._open(f"/blobs/{digest}", what)
                with map_client_errors(what), dest.open("wb") as out:
                    async with resp:
                        async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                            if done + len(chunk) > size:
                                raise DigestMismatch(
                                    f"{what}: registry sent more than the {size} bytes announced")
                            hasher.update(chunk)
                            out.write(chunk)
                            done += len(chunk)
                            on_bytes(len(chunk))
            except RegistryError:
                on_bytes(-done)
                raise
            if done != size:
                raise DigestMismatch(f"{what}: truncated blob, got {done} of {size} bytes")
            if hasher.hexdigest() != hexd:
                raise DigestMismatch(f"{what}: content does not match digest {digest}")

        await with_retries(attempt)

    @staticmethod
    async def _read_limited(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
        parts: list[bytes] = []
        total = 0
        async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
            total += len(chunk)
            if total > limit:
                raise ManifestError(f"{what}: larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)


def body_digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()
