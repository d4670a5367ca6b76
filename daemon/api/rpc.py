"""JSON-RPC 2.0 dispatch (SPEC §11): decode, call a plain service method, encode.

This module is the one place that maps daemon exceptions to JSON-RPC error codes
(:data:`ERROR_CODES`); unexpected exceptions are logged with their traceback and answered as
-32603 with a generic message (no host paths or tracebacks leave the daemon).

    dispatcher = Dispatcher(services, control)
    reply = await dispatcher.handle_line(b'{"jsonrpc":"2.0","id":1,"method":"worker.list"}', notify)
    # reply == b'{"jsonrpc":"2.0","id":1,"result":{"workers":[]}}'  (None for notifications)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from client.protocol.base import Params, Result
from client.protocol.constants import ErrorCode
from client.protocol.messages import DaemonInfoResult, DaemonShutdownParams, EmptyResult
from client.protocol.methods import METHODS, SANDBOX_SOCKET_METHODS
from client.protocol.sandbox import SANDBOX_METHODS
from daemon import errors
from daemon.api.services import Services
from daemon.notify import Notify

__all__ = ["ERROR_CODES", "DaemonControl", "Dispatcher", "RpcFailure", "error_code_for"]

log = logging.getLogger("iii.daemon.rpc")

# Every concrete class of daemon/errors.py appears here (a test checks it); subclasses defined
# elsewhere resolve through their bases.
ERROR_CODES: dict[type[errors.DaemonError], ErrorCode] = {
    errors.DaemonError: ErrorCode.INTERNAL,
    errors.NotFound: ErrorCode.NOT_FOUND,
    errors.AlreadyExists: ErrorCode.ALREADY_EXISTS,
    errors.InvalidArgument: ErrorCode.INVALID_PARAMS,
    errors.InvalidProject: ErrorCode.INVALID_PROJECT,
    errors.ImageError: ErrorCode.IMAGE_ERROR,
    errors.Unavailable: ErrorCode.ISOLATION_UNAVAILABLE,
    errors.ScriptFailed: ErrorCode.SCRIPT_FAILED,
    errors.Conflict: ErrorCode.CONFLICT,
    errors.InvalidState: ErrorCode.INVALID_STATE,
    errors.Internal: ErrorCode.INTERNAL,
    errors.ConfigError: ErrorCode.INVALID_STATE,
    errors.SettingsError: ErrorCode.INTERNAL,  # start-up only: never reaches a client
    errors.ListenerError: ErrorCode.INTERNAL,  # start-up only: never reaches a client
}

GENERIC_INTERNAL_MESSAGE = "internal error (details are in the daemon log)"
DEFAULT_MAX_INFLIGHT = 1024


def error_code_for(exc: errors.DaemonError) -> ErrorCode:
    """The JSON-RPC code of a daemon error: its own class's entry, else its nearest base's."""
    for cls in type(exc).__mro__:
        code = ERROR_CODES.get(cls)
        if code is not None:
            return code
    return ErrorCode.INTERNAL


class RpcFailure(Exception):
    """A request that is answered with a JSON-RPC error (protocol-level or mapped)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


@dataclass(frozen=True, slots=True)
class DaemonControl:
    """What the dispatcher needs from the daemon itself for the ``daemon.*`` methods."""

    info: Callable[[], Awaitable[DaemonInfoResult]]
    request_shutdown: Callable[[bool], None]  # argument: stop_workers


Handler = Callable[[Any, Notify], Awaitable[Result]]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()
_NO_ID = object()  # a request without "id" is a notification


def encode_error(req_id: Any, code: int, message: str, data: Any = None) -> bytes:
    """One JSON-RPC error response (``id`` null when the request's id is unknown)."""
    err: dict[str, Any] = {"code": int(code), "message": message}
    if data is not None:
        err["data"] = data
    return _encoder.encode({"jsonrpc": "2.0", "id": req_id, "error": err})


def encode_notification(method: str, params: Any) -> bytes:
    return _encoder.encode({"jsonrpc": "2.0", "method": method, "params": params})


class Dispatcher:
    """Turns request lines into response lines; shared by every connection."""

    def __init__(self, services: Services, control: DaemonControl, *,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT) -> None:
        self._control = control
        self._max_inflight = max_inflight
        self._inflight = 0
        s, images, events = services.workers, services.images, services.events
        self._handlers: dict[str, Handler] = {
            "daemon.info": lambda p, n: control.info(),
            "daemon.shutdown": self._shutdown,
            "worker.add": s.add,
            "worker.start": s.start,
            "worker.restart": s.restart,
            "worker.stop": lambda p, n: s.stop(p),
            "worker.remove": lambda p, n: s.remove(p),
            "worker.list": lambda p, n: s.list(),
            "worker.inspect": lambda p, n: s.inspect(p),
            "worker.logs": s.logs,
            "worker.exec": lambda p, n: s.exec(p, n),
            "worker.exec_signal": lambda p, n: s.exec_signal(p),
            "worker.export": lambda p, n: s.export(p, n),
            "worker.kubernetes": lambda p, n: s.kubernetes(p),
            "image.pull": images.image_pull,
            "image.list": lambda p, n: images.image_list(),
            "events.subscribe": lambda p, n: events.subscribe(n),
        }
        self._handlers.update(_sandbox_handlers(services))
        mismatched = set(METHODS) ^ set(self._handlers)
        if mismatched:  # a method added to client/protocol/methods.py needs a handler here, and back
            raise RuntimeError(f"methods without a handler or a protocol entry: {mismatched}")

    @property
    def inflight(self) -> int:
        return self._inflight

    async def _shutdown(self, params: DaemonShutdownParams, notify: Notify) -> EmptyResult:
        self._control.request_shutdown(params.stop_workers)
        return EmptyResult()

    async def handle_line(self, line: bytes, notify: Notify) -> bytes | None:
        """Answer one framed line: a request, a notification or a batch (None: nothing to send)."""
        try:
            message = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            return encode_error(None, ErrorCode.PARSE_ERROR, f"parse error: {exc}")
        if isinstance(message, list):
            if not message:
                return encode_error(None, ErrorCode.INVALID_REQUEST,
                                    "invalid request: empty batch")
            replies = await asyncio.gather(*(self._handle_one(m, notify) for m in message))
            parts = [r for r in replies if r is not None]
            return b"[" + b",".join(parts) + b"]" if parts else None
        return await self._handle_one(message, notify)

    async def _handle_one(self, message: Any, notify: Notify) -> bytes | None:
        req_id: Any = _NO_ID
        if isinstance(message, dict) and _is_valid_id(message.get("id", _NO_ID)):
            req_id = message["id"]
        try:
            method, raw_params = _check_request(message)
            result = await self._call(method, raw_params, notify)
            if req_id is _NO_ID:
                return None
            return _encoder.encode({"jsonrpc": "2.0", "id": req_id, "result": result})
        except RpcFailure as exc:
            if req_id is _NO_ID and exc.code != ErrorCode.INVALID_REQUEST:
                return None  # notifications are never answered, even on error
            rid = None if req_id is _NO_ID else req_id
            return encode_error(rid, exc.code, exc.message, exc.data)

    async def _call(self, method: str, raw_params: Any, notify: Notify) -> Result:
        entry = METHODS.get(method)
        if entry is None:
            raise RpcFailure(ErrorCode.METHOD_NOT_FOUND, f"method not found: {method}")
        params_type, result_type = entry
        try:
            params = _decode_params(params_type, raw_params)
        except RpcFailure as exc:
            if method.startswith("sandbox."):  # upstream's structured payload, as on the bus
                from daemon.ephemeral.errors import request_error_payload

                exc.data = request_error_payload(method, exc.message)
            raise
        if self._inflight >= self._max_inflight:
            raise RpcFailure(ErrorCode.BUSY, "daemon busy: too many requests in flight; retry")
        self._inflight += 1
        try:
            result = await self._handlers[method](params, notify)
        except errors.DaemonError as exc:
            code = error_code_for(exc)
            if code == ErrorCode.INTERNAL:
                log.error("%s failed", method, exc_info=exc)
                raise RpcFailure(code, GENERIC_INTERNAL_MESSAGE) from exc
            raise RpcFailure(code, exc.message, exc.data()) from exc
        except Exception as exc:
            log.error("%s raised an unexpected exception", method, exc_info=exc)
            raise RpcFailure(ErrorCode.INTERNAL, GENERIC_INTERNAL_MESSAGE) from exc
        finally:
            self._inflight -= 1
        if not isinstance(result, result_type):
            log.error("%s returned %s, expected %s", method, type(result).__name__,
                      result_type.__name__)
            raise RpcFailure(ErrorCode.INTERNAL, GENERIC_INTERNAL_MESSAGE)
        return result


def _sandbox_handlers(services: Services) -> dict[str, Handler]:
    """``sandbox.*``: the sandbox service's calls (``Unavailable`` when there is none)."""
    calls = services.sandbox_calls or {}

    def handler(method: str) -> Handler:
        call = calls.get(method)
        if call is not None:
            return lambda p, n: call(p, n)

        async def unavailable(params: Any, notify: Notify) -> Result:
            raise errors.Unavailable("this daemon serves no sandboxes")
        return unavailable

    return {method: handler(method) for method in [*SANDBOX_METHODS, *SANDBOX_SOCKET_METHODS]}


def _is_valid_id(req_id: Any) -> bool:
    return req_id is None or (
        isinstance(req_id, (str, int, float)) and not isinstance(req_id, bool))


def _check_request(message: Any) -> tuple[str, Any]:
    """Validate the JSON-RPC envelope; returns (method, params or None).

    An invalid request is answered even without an id (JSON-RPC 2.0 §5: with id null).
    """
    if not isinstance(message, dict):
        raise _invalid("expected a JSON object")
    if not _is_valid_id(message.get("id", _NO_ID)) and "id" in message:
        raise _invalid("id must be a string, a number or null")
    if message.get("jsonrpc") != "2.0":
        raise _invalid('"jsonrpc" must be "2.0"')
    method = message.get("method")
    if not isinstance(method, str):
        raise _invalid('"method" must be a string')
    params = message.get("params")
    if params is not None and not isinstance(params, (dict, list)):
        raise _invalid('"params" must be an object or an array')
    return method, params


def _invalid(reason: str) -> RpcFailure:
    return RpcFailure(ErrorCode.INVALID_REQUEST, f"invalid request: {reason}")


def _decode_params(params_type: type[Params], raw: Any) -> Params:
    if raw is None or raw == []:
        raw = {}
    if not isinstance(raw, dict):
        raise RpcFailure(ErrorCode.INVALID_PARAMS,
                         "invalid params: pass params by name (a JSON object)")
    try:
        return msgspec.convert(raw, params_type)
    except msgspec.ValidationError as exc:
        raise RpcFailure(ErrorCode.INVALID_PARAMS, f"invalid params: {_name_field(str(exc))}"
                         ) from exc


def _name_field(message: str) -> str:
    """msgspec's ``Expected `int` - at `$.tail``` → ``tail: Expected `int```."""
    text, sep, where = message.rpartition(" - at `$.")
    return f"{where.rstrip('`')}: {text}" if sep else message
