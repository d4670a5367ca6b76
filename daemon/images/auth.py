"""Registry credentials (``~/.docker/config.json`` ``auths``) and ``WWW-Authenticate`` parsing."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from pathlib import Path

from daemon.images.errors import RegistryError

# Docker Hub credentials are stored under the legacy index URL by `docker login`.
_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io",
                    "registry-1.docker.io", "https://registry-1.docker.io")
_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class Credentials:
    """Either ``username``/``password`` (Basic, also used for the token endpoint) or a
    ``registry_token`` sent as Bearer directly."""

    username: str | None = None
    password: str | None = None
    registry_token: str | None = None

    def basic_header(self) -> str | None:
        if self.username is None:
            return None
        raw = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True)
class Challenge:
    scheme: str
    params: dict[str, str]


def _host_of(key: str) -> str:
    host = key.split("://", 1)[-1]
    return host.split("/", 1)[0].lower()


def load_credentials(config_path: Path | None, registry: str) -> Credentials | None:
    """Credentials for ``registry`` (a ``host[:port]``, ``docker.io`` for Docker Hub) from a
    docker ``config.json``; ``None`` when the file or entry is absent.

    Raises :class:`RegistryError` naming the file when it exists but cannot be read.
    """
    if config_path is None or not config_path.is_file():
        return None
    try:
        doc = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"cannot read docker config {config_path}: {exc}") from exc
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        return None
    wanted = {_host_of(k) for k in _DOCKER_HUB_KEYS} if registry == "docker.io" else {
        registry.lower()}
    for key, entry in auths.items():
        if _host_of(key) not in wanted or not isinstance(entry, dict):
            continue
        if entry.get("registrytoken"):
            return Credentials(registry_token=str(entry["registrytoken"]))
        if entry.get("auth"):
            try:
                user, colon, password = base64.b64decode(entry["auth"], validate=True
                                                         ).decode().partition(":")
                if not colon:
                    raise ValueError("no ':'")
            except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
                raise RegistryError(
                    f"docker config {config_path}: auths[{key!r}].auth is not base64 "
                    "'user:password'") from exc
            if entry.get("identitytoken"):
                # OAuth2 refresh token flow is not supported; the token is used as password.
                password = str(entry["identitytoken"])
            return Credentials(username=user, password=password)
        if entry.get("username"):
            return Credentials(username=str(entry["username"]),
                               password=str(entry.get("password", "")))
    return None


def parse_challenge(header: str) -> Challenge:
    """``Bearer realm="https://auth",service="x",scope="y"`` → Challenge("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)
