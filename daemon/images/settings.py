"""How to reach registries: insecure hosts, the Docker Hub mirror, credentials, concurrency."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CONCURRENCY = 4


@dataclass(frozen=True)
class RegistrySettings:
    """Registry access settings; build from the environment with :meth:`from_env`.

    ``insecure_registries`` are ``host[:port]`` values reached over plain HTTP (loopback always
    is); ``mirror`` is a ``host[:port]`` (or ``http(s)://host[:port]``) tried first for Docker Hub
    refs; ``docker_config`` the ``config.json`` whose ``auths`` provide credentials.
    """

    insecure_registries: frozenset[str] = field(default_factory=frozenset)
    mirror: str | None = None
    docker_config: Path | None = None
    concurrency: int = DEFAULT_CONCURRENCY

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 insecure_registries: Iterable[str] = (), registry_mirror: str | None = None,
                 concurrency: int = DEFAULT_CONCURRENCY) -> RegistrySettings:
        """``III_INSECURE_REGISTRIES`` (comma-separated), ``III_REGISTRY_MIRROR`` and
        ``DOCKER_CONFIG`` (a directory) or ``~/.docker/config.json``; env values win over the
        keyword defaults (which come from ``daemon.yaml``)."""
        env = os.environ if environ is None else environ
        insecure, mirror = registry_overrides(env)
        return cls(frozenset(insecure if insecure is not None else insecure_registries),
                   mirror or registry_mirror or None, docker_config_path(env),
                   max(1, concurrency))

    def is_plain_http(self, host: str) -> bool:
        """Plain HTTP only for loopback hosts and the insecure list (``host`` may carry a port)."""
        if host in self.insecure_registries:
            return True
        name = host
        if name.startswith("["):
            name = name[1:].split("]", 1)[0]
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        if name in self.insecure_registries or name == "localhost":
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False


def registry_overrides(env: Mapping[str, str]) -> tuple[list[str] | None, str | None]:
    """``III_INSECURE_REGISTRIES`` (comma-separated hosts) and ``III_REGISTRY_MIRROR`` as set in
    ``env``; None for each one that is unset. The one parser of both (daemon.yaml's loader
    uses it too)."""
    insecure = None
    if env.get("III_INSECURE_REGISTRIES"):
        insecure = [h.strip() for h in env["III_INSECURE_REGISTRIES"].split(",") if h.strip()]
    return insecure, env.get("III_REGISTRY_MIRROR", "").strip() or None


def docker_config_path(env: Mapping[str, str]) -> Path | None:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json`` (None without a HOME)."""
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    home = env.get("HOME")
    return Path(home) / ".docker" / "config.json" if home else None
