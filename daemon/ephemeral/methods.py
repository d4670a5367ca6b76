"""Socket method → the service call that serves it (one table for the socket's dispatcher and
the engine bus)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from client.protocol import Params, Result
from client.sandbox_protocol import SANDBOX_METHODS
from daemon.ephemeral.service import SandboxService

__all__ = ["SandboxCall", "sandbox_calls"]

SandboxCall = Callable[[Params], Awaitable[Result]]


def sandbox_calls(service: SandboxService) -> dict[str, SandboxCall]:
    """Every ``sandbox.*`` method of ``client.sandbox_protocol.SANDBOX_METHODS``."""
    s: Any = service  # each call gets exactly its method's params type (the dispatcher decodes)
    calls: dict[str, SandboxCall] = {
        "sandbox.run": s.run, "sandbox.create": s.create, "sandbox.exec": s.exec,
        "sandbox.list": lambda p: s.list_sandboxes(), "sandbox.stop": s.stop,
        "sandbox.catalog.list": lambda p: s.catalog(),
        "sandbox.fs.read": s.read, "sandbox.fs.write": s.write, "sandbox.fs.ls": s.ls,
        "sandbox.fs.stat": s.stat, "sandbox.fs.mkdir": s.mkdir, "sandbox.fs.rm": s.rm,
        "sandbox.fs.mv": s.mv, "sandbox.fs.chmod": s.chmod, "sandbox.fs.grep": s.grep,
        "sandbox.fs.sed": s.sed,
    }
    assert set(calls) == set(SANDBOX_METHODS), set(calls) ^ set(SANDBOX_METHODS)
    return calls
