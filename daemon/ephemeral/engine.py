"""``sandbox::*`` on the engine bus: upstream's 16 function ids over the daemon's one engine
session. A call's ``data`` is decoded into the method's request struct (a bad payload is S001,
or S210 for ``sandbox::fs::*``, naming the field), served by ``SandboxService``, and answered
with the response struct; a failure answers ``error: {code: <S-code>, message: <JSON of the
structured payload>}`` as upstream's ``SandboxErrorWire`` does."""

from __future__ import annotations

import json
import logging
from typing import Any

import msgspec

from client.protocol.sandbox import SANDBOX_FUNCTIONS, SANDBOX_METHODS
from daemon.engine.calls import FunctionError, Handler
from daemon.ephemeral.errors import SandboxError, SCode, sandbox_error
from daemon.ephemeral.methods import SandboxCall, sandbox_calls
from daemon.ephemeral.service import SandboxService
from daemon.errors import DaemonError

__all__ = ["SandboxEngineApi"]

log = logging.getLogger("iii.daemon.sandboxes")


class SandboxEngineApi:
    """The engine-bus face of a :class:`SandboxService`."""

    def __init__(self, service: SandboxService) -> None:
        self._calls = sandbox_calls(service)

    def functions(self) -> dict[str, Handler]:
        """function id → handler, for ``EngineSession.serve``."""
        return {fid: self._handler(method) for fid, method in SANDBOX_FUNCTIONS.items()}

    def _handler(self, method: str) -> Handler:
        params_type = SANDBOX_METHODS[method][0]
        call = self._calls[method]
        bad_request = SCode.S210 if method.startswith("sandbox.fs.") else SCode.S001

        async def handle(data: Any) -> Any:
            try:
                params = msgspec.convert({} if data is None else data, params_type)
            except msgspec.ValidationError as exc:
                raise _wire(sandbox_error(bad_request, f"invalid request: {_named(exc)}")
                            ) from exc
            return await _serve(call, params)

        return handle


async def _serve(call: SandboxCall, params: Any) -> Any:
    try:
        return msgspec.to_builtins(await call(params, None))
    except SandboxError as exc:
        raise _wire(exc) from exc
    except DaemonError as exc:  # below us (a launcher, an image): still upstream's shape
        log.warning("sandbox call failed: %s", exc.message)
        raise _wire(sandbox_error(SCode.S300, exc.message)) from exc


def _named(exc: msgspec.ValidationError) -> str:
    """msgspec's ``Expected `int` - at `$.timeout_ms``` → ``timeout_ms: Expected `int```."""
    text, sep, where = str(exc).rpartition(" - at `$.")
    return f"{where.rstrip('`')}: {text}" if sep else str(exc)


def _wire(exc: SandboxError) -> FunctionError:
    return FunctionError(exc.code.name, json.dumps(exc.payload()))
