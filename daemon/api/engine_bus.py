"""The daemon's management API on the engine bus (SPEC §10), as upstream iii's worker manager
offers it: iii functions served over the daemon's one :class:`~daemon.engine.session.EngineSession`.

- ``worker::list``, ``worker::status``, ``worker::logs`` always; ``worker::start``,
  ``worker::stop``, ``worker::restart``, ``worker::add``, ``worker::remove`` only with
  ``engine_control: true`` in daemon.yaml (otherwise registered and refused with
  ``error: {code: "forbidden", ...}``, so a caller learns why). Each takes and returns exactly
  what the socket method of ``client.protocol.methods.ENGINE_FUNCTIONS`` does: a call is handed to the
  socket protocol's own :class:`~daemon.api.rpc.Dispatcher` as that method, so decoding, validation
  and error mapping are the socket's (an error's ``code`` is the JSON-RPC code's name,
  lower-cased: ``not_found``, ``invalid_params``, ...). No progress is streamed and ``worker::logs``
  refuses ``follow``.
- ``worker::validate`` (``WorkerValidateParams``) answers ``iii worker validate --json``'s
  document for a project path on the daemon's host.
- Lifecycle events through the engine's trigger mechanism: the trigger type
  ``worker::lifecycle`` (config ``LifecycleTriggerConfig``); every worker event (the
  ``events.subscribe`` notifications: ``preparing``, ``starting``, ``running``, ``stopped``,
  ``crashed``, ``registered``, ...) is sent to each matching trigger's function as an
  ``EventNotification`` plus ``lifecycle``, upstream's name for it (``starting``, ``running``,
  ``stopped``, ``failed``, ``registered``, ...); a trigger's ``statuses`` may name either.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from client.protocol.constants import ErrorCode
from client.protocol.messages import (
    DaemonInfoResult,
    EventNotification,
    LifecycleTriggerConfig,
    WorkerValidateParams,
)
from client.protocol.methods import (
    ENGINE_CONTROL_FUNCTIONS,
    ENGINE_FUNCTIONS,
    LIFECYCLE_TRIGGER_TYPE,
)
from daemon.api.rpc import DaemonControl, Dispatcher
from daemon.api.services import Services
from daemon.engine.session import EngineSession, FunctionError, Handler
from daemon.events import EventBus
from daemon.notify import NULL_NOTIFY

__all__ = ["EngineApi"]

log = logging.getLogger("iii.daemon.engine")

_encoder = msgspec.json.Encoder()


async def _no_info() -> DaemonInfoResult:
    raise FunctionError("function_not_found", "daemon.* is not served on the engine bus")


def _no_shutdown(stop_workers: bool) -> None:
    raise FunctionError("function_not_found", "daemon.* is not served on the engine bus")


@dataclass(frozen=True)
class _Trigger:
    function_id: str
    config: LifecycleTriggerConfig


_LIFECYCLE = {"preparing": "starting", "installing": "starting", "starting": "starting",
              "running": "running", "stopping": "stopping", "stopped": "stopped",
              "crashed": "failed", "backoff": "failed"}


def lifecycle_of(event: EventNotification) -> str:
    """Upstream's lifecycle name for a worker event: starting, running, stopped, failed,
    registered, unregistered (a start that failed is ``failed``, not ``stopped``)."""
    if event.status == "stopped" and (event.detail or "").startswith("start failed"):
        return "failed"
    return _LIFECYCLE.get(event.status, event.status)


class EngineApi:
    """Builds the function handlers and serves the ``worker::lifecycle`` trigger type."""

    def __init__(self, services: Services, events: EventBus, *,
                 engine_control: bool) -> None:
        self.engine_control = engine_control
        self.events = events
        self._dispatcher = Dispatcher(services, DaemonControl(info=_no_info,
                                                             request_shutdown=_no_shutdown))
        self._triggers: dict[str, _Trigger] = {}

    # -- functions -----------------------------------------------------------------------------

    def functions(self) -> dict[str, Handler]:
        """function id → handler, for :class:`EngineSession` ``functions=``."""
        handlers: dict[str, Handler] = {"worker::validate": self._validate}
        for function_id, method in ENGINE_FUNCTIONS.items():
            handlers[function_id] = self._handler(function_id, method)
        return handlers

    def _handler(self, function_id: str, method: str) -> Handler:
        async def handle(data: Any) -> Any:
            if function_id in ENGINE_CONTROL_FUNCTIONS and not self.engine_control:
                raise FunctionError("forbidden", f"{function_id} over the engine needs "
                                    "engine_control: true in the daemon's daemon.yaml")
            if function_id == "worker::logs" and isinstance(data, dict) and data.get("follow"):
                raise FunctionError("invalid_params", "worker::logs cannot follow over the "
                                    "engine bus; use `iii worker logs -f`")
            return await self._dispatch(method, data)

        return handle

    async def _dispatch(self, method: str, data: Any) -> Any:
        request: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
        if data is not None:
            request["params"] = data
        reply = await self._dispatcher.handle_line(_encoder.encode(request), NULL_NOTIFY)
        assert reply is not None  # a request with an id is always answered
        answer = msgspec.json.decode(reply)
        error = answer.get("error")
        if error is not None:
            try:
                code = ErrorCode(error["code"]).name.lower()
            except ValueError:
                code = str(error["code"])
            raise FunctionError(code, str(error["message"]))
        return answer["result"]

    async def _validate(self, data: Any) -> Any:
        from manifests import ManifestError, load_worker

        try:
            params = msgspec.convert(data, WorkerValidateParams)
        except msgspec.ValidationError as exc:
            raise FunctionError("invalid_params", f"invalid params: {exc}") from exc
        try:
            spec = await asyncio.to_thread(load_worker, Path(params.path).expanduser())
        except ManifestError as exc:
            raise FunctionError("invalid_project", str(exc)) from exc
        return spec.document()

    # -- the worker::lifecycle trigger type ------------------------------------------------------

    def trigger_types(self) -> dict[str, str]:
        return {LIFECYCLE_TRIGGER_TYPE: "worker lifecycle events of the iii sandbox daemon "
                                        "(config: {statuses?: [str], worker?: str})"}

    def register_trigger(self, trigger_id: str, trigger_type: str, function_id: str,
                         config: Any) -> None:
        if trigger_type != LIFECYCLE_TRIGGER_TYPE:
            raise FunctionError("trigger_type_not_found",
                                f"trigger type '{trigger_type}' is not served here")
        try:
            parsed = msgspec.convert(config or {}, LifecycleTriggerConfig)
        except msgspec.ValidationError as exc:
            raise FunctionError("invalid_config", f"{LIFECYCLE_TRIGGER_TYPE} config: {exc}"
                                ) from exc
        self._triggers[trigger_id] = _Trigger(function_id, parsed)
        log.info("%s trigger %s → %s", LIFECYCLE_TRIGGER_TYPE, trigger_id, function_id)

    def unregister_trigger(self, trigger_id: str) -> None:
        self._triggers.pop(trigger_id, None)

    def forget_triggers(self) -> None:
        """The session closed: the engine drops our triggers with it."""
        self._triggers.clear()

    async def forward_events(self, session: EngineSession) -> None:
        """Send every worker event to the matching triggers' functions; cancel to stop."""
        async for event in self.events.stream():
            if not self._triggers:
                continue
            phase = lifecycle_of(event)
            payload = {**msgspec.to_builtins(event), "lifecycle": phase}
            for trigger in list(self._triggers.values()):
                config = trigger.config
                if config.worker is not None and config.worker != event.worker:
                    continue
                if config.statuses is not None and event.status not in config.statuses \
                        and phase not in config.statuses:
                    continue
                await session.fire(trigger.function_id, payload)
