"""Socket method → the service call that serves it (one table for the socket's dispatcher and
the engine bus)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from client.protocol.base import Params, Result
from client.protocol.methods import SANDBOX_SOCKET_METHODS
from client.protocol.sandbox import SANDBOX_METHODS
from daemon.ephemeral.service import SandboxService

__all__ = ["SandboxCall", "sandbox_calls"]

#: (params, notify) → result; notify is the socket connection's (None on the engine bus)
SandboxCall = Callable[[Params, Any], Awaitable[Result]]


def sandbox_calls(service: SandboxService) -> dict[str, SandboxCall]:
    """Every ``sandbox.*`` socket method (the upstream functions and the socket-only ones)."""
    s: Any = service  # each call gets exactly its method's params type (the dispatcher decodes)
    plain = {"sandbox.run": s.run, "sandbox.create": s.create, "sandbox.exec": s.exec,
             "sandbox.list": lambda p: s.list_sandboxes(), "sandbox.stop": s.stop,
             "sandbox.catalog.list": lambda p: s.catalog(),
             "sandbox.fs.read": s.read, "sandbox.fs.write": s.write, "sandbox.fs.ls": s.ls,
             "sandbox.fs.stat": s.stat, "sandbox.fs.mkdir": s.mkdir, "sandbox.fs.rm": s.rm,
             "sandbox.fs.mv": s.mv, "sandbox.fs.chmod": s.chmod, "sandbox.fs.grep": s.grep,
             "sandbox.fs.sed": s.sed, "sandbox.exec_signal": s.exec_signal}
    calls: dict[str, SandboxCall] = {m: _ignore_notify(c) for m, c in plain.items()}
    calls["sandbox.exec_stdio"] = s.exec_stdio
    expected = {*SANDBOX_METHODS, *SANDBOX_SOCKET_METHODS}
    assert set(calls) == expected, set(calls) ^ expected
    return calls


def _ignore_notify(call: Callable[[Any], Awaitable[Any]]) -> SandboxCall:
    return lambda params, notify: call(params)
