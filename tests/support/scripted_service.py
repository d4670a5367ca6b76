"""A scripted in-memory ``WorkerService`` for socket-server and CLI tests.

It is a test fixture for the server (the real lifecycle is tested on its own): it keeps workers
in a dict and lets tests hold operations open (``add_gate``), fail them on purpose and stream
notifications, so framing, concurrency, notification and error paths can be exercised exactly.
Special names: a target or worker named ``boom`` raises an unexpected exception (→ -32603),
target ``./fails`` raises ``ScriptFailed`` (→ -32006), type ``config`` workers refuse start/stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from client.protocol.messages import (
    EmptyResult,
    EventNotification,
    ImageListResult,
    ImagePullParams,
    ImagePullResult,
    ImageSummary,
    LogNotification,
    ProgressNotification,
    Resources,
    Worker,
    WorkerAddParams,
    WorkerAddResult,
    WorkerInspectResult,
    WorkerListResult,
    WorkerLogsParams,
    WorkerLogsResult,
    WorkerNameParams,
    WorkerRemoveResult,
    WorkerStartParams,
    WorkerStopParams,
)
from daemon.errors import AlreadyExists, InvalidState, NotFound, ScriptFailed
from daemon.notify import ClientGone, Notify


class ScriptedService:
    """Implements every ``daemon.api.services`` Protocol over an in-memory worker table."""

    def __init__(self, worker_count: int = 0) -> None:
        self.workers: dict[str, Worker] = {}
        for i in range(worker_count):
            self.workers[f"w{i}"] = Worker(name=f"w{i}", type="local", source=f"/src/w{i}",
                                           resources=Resources(memory=2048, cpus=2))
        self.add_gate: asyncio.Event | None = None  # when set by a test, add waits for it
        self.add_entered = asyncio.Event()
        self.log_lines: list[str] = [f"line {i}" for i in range(1, 6)]
        self.follow_lines: list[str] = ["new 1", "new 2"]
        self.follow_started = asyncio.Event()
        self.follow_cancelled = asyncio.Event()
        self.events: asyncio.Queue[EventNotification] = asyncio.Queue()
        self.big_result_bytes = 0  # logs returns this many bytes extra (never-reading clients)
        self.closed_with: bool | None = None

    def _get(self, name: str) -> Worker:
        try:
            return self.workers[name]
        except KeyError:
            raise NotFound(f"worker '{name}' not found") from None

    def _set(self, w: Worker, **changes: object) -> Worker:
        fields = {f: getattr(w, f) for f in w.__struct_fields__}
        fields.update(changes)
        new = Worker(**fields)  # type: ignore[arg-type]
        self.workers[w.name] = new
        return new

    async def add(self, params: WorkerAddParams, notify: Notify) -> WorkerAddResult:
        if params.target == "boom":
            raise RuntimeError("unexpected failure at /very/secret/host/path")
        if params.target.endswith("/fails"):
            raise ScriptFailed("install", 3, ["npm ERR! one", "npm ERR! two"])
        for i in range(1, 4):
            if params.progress:
                with contextlib.suppress(ClientGone):  # the operation outlives its client
                    await notify("progress", ProgressNotification(
                        id=1, phase="pull", message="layers", current=i, total=3,
                        unit="layers"))
            if i == 1:
                self.add_entered.set()
                if self.add_gate is not None:
                    await self.add_gate.wait()
            for _ in range(20):
                await asyncio.sleep(0)  # a step of work: lets the event loop run (I/O, cancels)
        name = params.name or os.path.basename(params.target.rstrip("/")) or "root"
        if name in self.workers and not params.force:
            raise AlreadyExists(f"worker '{name}' already exists; use --force")
        kind = "local" if params.target.startswith("/") else "config"
        worker = Worker(name=name, type=kind, source=params.target)
        self.workers[name] = worker
        return WorkerAddResult(worker=worker, warnings=["resouces: did you mean resources?"],
                               started=False)

    async def start(self, params: WorkerStartParams, notify: Notify) -> Worker:
        w = self._get(params.name)
        if w.type == "config":
            raise InvalidState(f"worker '{w.name}' is a config worker served by the engine")
        if params.progress:
            await notify("progress", ProgressNotification(id=1, phase="start", message="go"))
        return self._set(w, status="running", pid=os.getpid(), isolation="namespace")

    async def restart(self, params: WorkerStartParams, notify: Notify) -> Worker:
        return await self.start(params, notify)

    async def stop(self, params: WorkerStopParams) -> Worker:
        w = self._get(params.name)
        if w.type == "config":
            raise InvalidState(f"worker '{w.name}' is a config worker served by the engine")
        return self._set(w, status="stopped", pid=None)

    async def remove(self, params: WorkerNameParams) -> WorkerRemoveResult:
        self._get(params.name)
        del self.workers[params.name]
        return WorkerRemoveResult(removed=True, freed_bytes=3 * 1024 * 1024)

    async def list(self) -> WorkerListResult:
        return WorkerListResult(workers=list(self.workers.values()))

    async def inspect(self, params: WorkerNameParams) -> WorkerInspectResult:
        if params.name == "boom":
            raise RuntimeError("unexpected failure at /very/secret/host/path")
        w = self._get(params.name)
        fields = {f: getattr(w, f) for f in w.__struct_fields__ if f != "warnings"}
        return WorkerInspectResult(**fields, warnings=[])  # type: ignore[arg-type]

    async def logs(self, params: WorkerLogsParams, notify: Notify) -> WorkerLogsResult:
        self._get(params.name)
        lines = self.log_lines[-params.tail:] if params.tail else []
        if self.big_result_bytes:
            lines = lines + ["x" * self.big_result_bytes]
        if params.follow:
            notify.spawn(self._follow(params.name, notify))
        return WorkerLogsResult(lines=lines)

    async def _follow(self, name: str, notify: Notify) -> None:
        self.follow_started.set()
        try:
            for line in self.follow_lines:
                await notify("log", LogNotification(name=name, line=line))
            await asyncio.Event().wait()  # until the client goes away
        except (asyncio.CancelledError, ClientGone):
            self.follow_cancelled.set()
            raise

    async def image_pull(self, params: ImagePullParams, notify: Notify) -> ImagePullResult:
        if params.progress:
            await notify("progress", ProgressNotification(
                id=1, phase="pull", message="blob", current=5, total=10, unit="bytes"))
        return ImagePullResult(ref=params.ref, digest="sha256:" + "ab" * 32, slug="s",
                               path="/cache/s", size_bytes=1024)

    async def image_list(self) -> ImageListResult:
        return ImageListResult(images=[ImageSummary(ref="docker.io/library/busybox:latest",
                                                    digest="sha256:" + "cd" * 32, slug="b",
                                                    size_bytes=2 * 1048576)])

    async def subscribe(self, notify: Notify) -> EmptyResult:
        async def pump() -> None:
            while True:
                await notify("event", await self.events.get())

        notify.spawn(pump())
        return EmptyResult()

    async def aclose(self, *, stop_workers: bool) -> None:
        self.closed_with = stop_workers
