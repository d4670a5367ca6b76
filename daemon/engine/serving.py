"""The daemon as the engine's callee, on an open session: what it sends first (who it is, the
functions and trigger types it serves), how an ``invokefunction`` from the engine is answered
with a :data:`~daemon.engine.calls.Handler`, and how ``registertrigger`` reaches the
:class:`~daemon.engine.calls.TriggerProvider`. :class:`~daemon.engine.session.EngineSession`
owns the connection and calls these."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from daemon.engine.calls import FunctionError, Handler, TriggerProvider

__all__ = ["DAEMON_WORKER_NAME", "answer", "register_trigger", "registration", "send",
           "send_quietly"]

log = logging.getLogger("iii.daemon.engine")

DAEMON_WORKER_NAME = "iii-sandbox-daemon"


async def send(ws: aiohttp.ClientWebSocketResponse, data: dict[str, Any]) -> None:
    """One message to the engine, as compact JSON."""
    await ws.send_str(json.dumps(data, separators=(",", ":")))


async def send_quietly(ws: aiohttp.ClientWebSocketResponse, data: dict[str, Any]) -> None:
    """:func:`send`, where a session that is closing only costs the message."""
    try:
        await send(ws, data)
    except (ConnectionError, RuntimeError) as exc:  # the session is closing
        log.debug("engine send failed: %s", exc)


def registration(version: str, functions: Iterable[str], triggers: TriggerProvider | None
                 ) -> list[dict[str, Any]]:
    """What a new session sends first: who we are (the void ``engine::workers::register``),
    then every function we serve and every trigger type we provide."""
    messages: list[dict[str, Any]] = [{
        "type": "invokefunction", "function_id": "engine::workers::register",
        "data": {"name": DAEMON_WORKER_NAME, "pid": os.getpid(), "version": version,
                 "runtime": "python", "description": "iii sandbox worker manager"},
        "action": {"type": "void"}}]
    messages += [{"type": "registerfunction", "id": function_id} for function_id in functions]
    if triggers is not None:
        messages += [{"type": "registertriggertype", "id": type_id, "description": description}
                     for type_id, description in triggers.trigger_types().items()]
    return messages


async def answer(ws: aiohttp.ClientWebSocketResponse, functions: Mapping[str, Handler],
                 data: dict[str, Any]) -> None:
    """Run the handler an ``invokefunction`` names and send its ``invocationresult`` (none for
    a void call, one without ``invocation_id``)."""
    function_id = str(data.get("function_id", ""))
    invocation_id = data.get("invocation_id")
    handler = functions.get(function_id)
    reply: dict[str, Any] = {"type": "invocationresult", "invocation_id": invocation_id,
                             "function_id": function_id}
    try:
        if handler is None:
            raise FunctionError("function_not_found", f"Function '{function_id}' not found")
        reply["result"] = await handler(data.get("data"))
    except FunctionError as exc:
        reply["error"] = {"code": exc.code, "message": exc.message}
    except Exception:
        log.exception("engine call of %s failed", function_id)
        reply["error"] = {"code": "internal", "message": "internal error (see daemon log)"}
    if invocation_id:
        await send_quietly(ws, reply)


async def register_trigger(ws: aiohttp.ClientWebSocketResponse,
                           triggers: TriggerProvider | None, data: dict[str, Any]) -> None:
    """Hand a ``registertrigger`` to the provider; answer ``triggerregistrationresult``."""
    reply: dict[str, Any] = {"type": "triggerregistrationresult", "id": data.get("id"),
                             "trigger_type": data.get("trigger_type"),
                             "function_id": data.get("function_id")}
    try:
        if triggers is None:
            raise FunctionError("trigger_type_not_found", "no trigger types here")
        triggers.register_trigger(str(data.get("id")), str(data.get("trigger_type")),
                                  str(data.get("function_id")), data.get("config"))
    except FunctionError as exc:
        reply["error"] = {"code": exc.code, "message": exc.message}
    await send_quietly(ws, reply)
