"""The channel from a method back to the client that called it (SPEC §11): JSON-RPC
notifications, the connection's file descriptors and the streams that outlive a request.

A leaf: the socket server (``daemon/api/server.py``) implements :class:`Notify` per connection;
the services below the API (workers, ephemeral sandboxes, the engine bus) only take one, so they
never import the API. Calls nobody listens to get :data:`NULL_NOTIFY`.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

import msgspec

__all__ = ["NULL_NOTIFY", "ClientGone", "Notify"]


class ClientGone(Exception):
    """Raised by :class:`Notify` when the client it is bound to has disconnected."""


class Notify(Protocol):
    """Sends JSON-RPC notifications to one client."""

    async def __call__(self, method: str, params: msgspec.Struct) -> None:
        """Queue ``{"jsonrpc": "2.0", "method": method, "params": params}`` for the client.

        Raises :class:`ClientGone` when the client has disconnected.
        """
        ...

    def take_fds(self) -> list[int]:
        """The file descriptors the client passed with the connection's first message (now the
        caller's to close); empty when none came or another request took them."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` for as long as the client stays connected (cancelled when it leaves).

        Use it for ``worker.logs`` with ``follow`` and for ``events.subscribe``: the task starts
        after the response to the current request has been queued.
        """
        ...


class _NullNotify:
    """The :class:`Notify` of a call nobody listens to (a hot reload, a call over the engine
    bus): no notifications, no streams, no file descriptors."""

    async def __call__(self, method: str, params: msgspec.Struct) -> None:
        return None

    def take_fds(self) -> list[int]:
        return []

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        coro.close()


NULL_NOTIFY: Notify = _NullNotify()
