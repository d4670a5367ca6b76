"""A worker's network policy for its launcher (``vmm_ffi.params.NetworkPolicy``).

The daemon resolves what the launcher cannot know: the engine's port (from ``engine_url``:
shown at the sandbox's ``127.0.0.1`` when the engine is on the host's loopback, else allowed
at its address), and what is allowed automatically so installs keep working under every
policy but ``none``: the proxy the daemon hands to sandboxes (``HTTP(S)_PROXY``, even on the
host's loopback) and the registry mirror.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from urllib.parse import urlsplit

from daemon.config.network import NetworkSetting
from daemon.errors import InvalidArgument
from vmm_ffi.params import NetworkPolicy

PROXY_KEYS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
              "all_proxy")
LOOPBACK_NAMES = ("localhost", "ip6-localhost")
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "socks5": 1080,
                 "socks5h": 1080}


def build_policy(setting: NetworkSetting, engine_url: str, registry_mirror: str | None,
                 environ: Mapping[str, str] | None = None) -> NetworkPolicy:
    """The launcher's policy for ``setting`` (not ``host``). Blocking (resolves names).

    Raises ``InvalidArgument`` when the engine URL, a proxy or the mirror cannot be resolved.
    """
    env = os.environ if environ is None else environ
    mode = setting.policy or "egress"
    assert mode in ("none", "engine", "egress"), mode
    engine_port, auto = None, []
    engine = _endpoint(engine_url, "engine_url")
    if engine is not None:
        host, port = engine
        if _is_loopback(host):
            engine_port = port
        else:
            auto += _allowed(host, port, "engine_url")
    for key in PROXY_KEYS:
        if env.get(key):
            found = _endpoint(env[key], key)
            if found is not None:
                auto += _allowed(*found, key)
    if registry_mirror:
        mirror = registry_mirror if "://" in registry_mirror else f"https://{registry_mirror}"
        found = _endpoint(mirror, "registry_mirror")
        if found is not None:
            auto += _allowed(*found, "registry_mirror")
    return NetworkPolicy(mode=mode, engine_port=engine_port, allow=list(setting.allow),  # type: ignore[arg-type]
                         deny=list(setting.deny), auto_allow=sorted(set(auto)))


def _endpoint(url: str, where: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError as exc:
        raise InvalidArgument(f"{where}: {url!r} is not a URL ({exc})") from None
    if not parts.hostname or port is None:
        return None
    return parts.hostname, port


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _allowed(host: str, port: int, where: str) -> list[str]:
    """``host:port`` entries for every address of ``host`` (loopback: 127.0.0.1)."""
    if _is_loopback(host):
        return [f"127.0.0.1:{port}"]
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise InvalidArgument(f"{where}: cannot resolve {host!r} ({exc}), so the network "
                              "policy cannot allow it; fix the name or the DNS") from None
    out = []
    for family, *_, address in infos:
        ip = str(address[0])
        out.append(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
    return out
