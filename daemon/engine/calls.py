"""What travels over the engine session besides the session itself: the handlers the daemon
serves, the errors of a call, the trigger provider, and the engine's worker list entries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import msgspec

__all__ = ["Callback", "EngineCallFailed", "EngineWorker", "FunctionError", "Handler",
           "TriggerProvider"]

Callback = Callable[[], Awaitable[None]]
#: Serves one function: takes the call's ``data``, returns a JSON-able result or raises
#: :class:`FunctionError`.
Handler = Callable[[Any], Awaitable[Any]]


class EngineCallFailed(Exception):
    """Raised by :meth:`EngineSession.call` when there is no session, the session closed before
    the answer, the answer did not come in time, or the engine answered an ``error``
    (``code`` holds the engine's code, or ``unavailable`` / ``timeout``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class FunctionError(Exception):
    """Raised by a :data:`Handler` to answer the caller with ``error: {code, message}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class TriggerProvider(Protocol):
    """Serves the trigger types the session registers (``registertriggertype``)."""

    def trigger_types(self) -> Mapping[str, str]:
        """Trigger type id → description."""
        ...

    def register_trigger(self, trigger_id: str, trigger_type: str, function_id: str,
                         config: Any) -> None:
        """Accept a trigger; raise :class:`FunctionError` to refuse it."""
        ...

    def unregister_trigger(self, trigger_id: str) -> None: ...


class EngineWorker(msgspec.Struct, frozen=True):
    """One worker the engine lists (``status`` is the engine's word, e.g. ``connected``)."""

    name: str
    status: str = "unknown"
