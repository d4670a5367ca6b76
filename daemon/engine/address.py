"""Where the engine is: its URL (SPEC §10 ``III_URL``), host and port, and a TCP probe."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from urllib.parse import urlsplit

from daemon.errors import InvalidArgument

__all__ = ["DEFAULT_ENGINE_URL", "ENGINE_CONNECT_TIMEOUT_S", "engine_address",
           "engine_url_from_env", "tcp_reachable"]

DEFAULT_ENGINE_URL = "ws://127.0.0.1:49134"
#: One TCP probe's budget.
ENGINE_CONNECT_TIMEOUT_S = 0.2


def engine_url_from_env(environ: Mapping[str, str]) -> str:
    """``III_URL`` if set and non-empty, else :data:`DEFAULT_ENGINE_URL`."""
    return environ.get("III_URL") or DEFAULT_ENGINE_URL


def engine_address(url: str) -> tuple[str, int]:
    """(host, port) of a ``ws://`` / ``wss://`` (or http/https) URL; raises InvalidArgument."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument(f"engine URL {url!r} is invalid: {exc}") from exc
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        raise InvalidArgument(
            f"engine URL {url!r} is invalid: expected ws://HOST:PORT (e.g. {DEFAULT_ENGINE_URL})")
    if port is None:
        port = 443 if parts.scheme in ("wss", "https") else 80
    return parts.hostname, port


async def tcp_reachable(host: str, port: int, timeout: float = ENGINE_CONNECT_TIMEOUT_S) -> bool:
    """Whether something accepts a TCP connection at host:port within ``timeout``."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass  # a reset on close still proves the port answered
    return True
