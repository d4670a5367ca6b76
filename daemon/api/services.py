"""The interface between the socket server and what the methods mean (SPEC §11).

The RPC layer (``daemon/api/rpc.py``) decodes a request's params into the ``client.protocol``
Params struct, calls one method of the :class:`Services` (``worker.*`` → :class:`WorkerService`,
``image.*`` → :class:`ImageService`, ``events.*`` → :class:`EventService`) and encodes what it
returns. No logic lives in the dispatcher; everything a method means lives behind these Protocols.

Notifications: methods that report progress or stream (``add``, ``start``, ``restart``, ``logs``,
``image_pull``, ``subscribe``) get a :class:`~daemon.notify.Notify` bound to the calling client:

    await notify("progress", ProgressNotification(id=1, phase="pull", message="layer 1/3"))

Progress notifications sent before the method returns reach the client before the response.
Streams that outlive the request (``logs`` with ``follow``, ``events.subscribe``) hand a coroutine
to ``notify.spawn(...)``: the connection owns that task, starts it once the response is queued
and cancels it when the client goes away. ``notify`` raises
:class:`~daemon.notify.ClientGone` once the client has disconnected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from client.protocol.messages import (
    EmptyResult,
    ImageListResult,
    ImagePullParams,
    ImagePullResult,
    Worker,
    WorkerAddParams,
    WorkerAddResult,
    WorkerExecParams,
    WorkerExecResult,
    WorkerExecSignalParams,
    WorkerExportParams,
    WorkerExportResult,
    WorkerInspectResult,
    WorkerKubernetesParams,
    WorkerKubernetesResult,
    WorkerListResult,
    WorkerLogsParams,
    WorkerLogsResult,
    WorkerNameParams,
    WorkerRemoveResult,
    WorkerStartParams,
    WorkerStopParams,
)
from daemon.notify import Notify

__all__ = ["AllServices", "EventService", "ImageService", "Services", "WorkerService"]


class WorkerService(Protocol):
    """What the daemon does for the ``worker.*`` methods.

    Every method raises ``daemon.errors.DaemonError`` subclasses for failures the client should
    see; anything else is answered as a generic -32603 and logged with its traceback.
    ``start`` of a running worker and ``stop`` of a stopped one succeed and return the worker
    unchanged (the upstream engine CLI relies on that).
    """

    async def add(self, params: WorkerAddParams, notify: Notify) -> WorkerAddResult: ...

    async def start(self, params: WorkerStartParams, notify: Notify) -> Worker: ...

    async def restart(self, params: WorkerStartParams, notify: Notify) -> Worker: ...

    async def stop(self, params: WorkerStopParams) -> Worker: ...

    async def remove(self, params: WorkerNameParams) -> WorkerRemoveResult: ...

    async def list(self) -> WorkerListResult: ...

    async def inspect(self, params: WorkerNameParams) -> WorkerInspectResult: ...

    async def export(self, params: WorkerExportParams, notify: Notify) -> WorkerExportResult: ...

    async def logs(self, params: WorkerLogsParams, notify: Notify) -> WorkerLogsResult: ...

    async def exec(self, params: WorkerExecParams, notify: Notify) -> WorkerExecResult: ...

    async def exec_signal(self, params: WorkerExecSignalParams) -> EmptyResult: ...

    async def kubernetes(self, params: WorkerKubernetesParams) -> WorkerKubernetesResult: ...

    async def aclose(self, *, stop_workers: bool) -> None:
        """Called once at daemon shutdown, after the server stopped serving.

        ``stop_workers=False`` (``--keep-workers``, upgrades) leaves sandboxes running for the
        next daemon to reattach.
        """
        ...


class ImageService(Protocol):
    """``image.pull`` and ``image.list``."""

    async def image_pull(self, params: ImagePullParams, notify: Notify) -> ImagePullResult: ...

    async def image_list(self) -> ImageListResult: ...


class EventService(Protocol):
    """``events.subscribe``: streams worker events until the client leaves."""

    async def subscribe(self, notify: Notify) -> EmptyResult: ...


class AllServices(WorkerService, ImageService, EventService, Protocol):
    """One object serving every method (the scripted services of the tests)."""


@dataclass(frozen=True, slots=True)
class Services:
    """What the dispatcher calls, one service per method family; built in ``daemon/app.py``."""

    workers: WorkerService
    images: ImageService
    events: EventService
    #: The engine session's view for ``daemon.info`` (None: answer with a TCP probe).
    engine_reachable: Callable[[], bool] | None = None
    #: ``sandbox.*`` method → the sandbox service's call (``daemon.ephemeral.methods``); None:
    #: no sandbox service here (those methods answer "unavailable").
    sandbox_calls: Mapping[str, Callable[[Any, Notify], Awaitable[Any]]] | None = None

    @classmethod
    def of(cls, service: AllServices) -> Services:
        return cls(workers=service, images=service, events=service)
