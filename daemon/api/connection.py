"""One client connection of the socket server (SPEC §11): its requests, its write queue, its
notification streams, and the file descriptors it passed.

One task per request (requests of one connection run concurrently and may be answered in any
order) and one writer task draining a bounded queue, so a client that never reads only ever
fills its own queue, and is dropped when that queue is full. ``daemon/api/server.py`` accepts
connections and runs one :class:`Connection` each.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import msgspec

from client.protocol.constants import MAX_LINE_BYTES, ErrorCode
from daemon.api.rpc import Dispatcher, encode_error, encode_notification
from daemon.notify import ClientGone

__all__ = ["Connection", "ServerLimits"]

log = logging.getLogger("iii.daemon.server")

CLOSE_TIMEOUT_S = 2.0  # waiting for a closed transport to finish
NOTIFY_BACKPRESSURE_TIMEOUT_S = 30.0  # a notifier waits this long for queue room, then drops
MAX_PASSED_FDS = 3  # worker.exec: the command's stdin, stdout, stderr


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_connections: int = 512
    max_line_bytes: int = MAX_LINE_BYTES
    max_requests_per_connection: int = 256  # beyond: stop reading that connection for a while
    write_queue_messages: int = 4096  # per connection; full → the connection is dropped
    write_queue_bytes: int = 64 * 1024 * 1024


_CLOSE = object()


class _Notifier:
    """The :class:`daemon.notify.Notify` of one request line on one connection.

    Streams spawned while the request runs are held back until its reply is queued, so a client
    always sees the response before the stream's notifications (batches included).
    """

    __slots__ = ("_conn", "_held")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._held: list[Coroutine[Any, Any, None]] | None = []

    async def __call__(self, method: str, params: msgspec.Struct) -> None:
        await self._conn.send_notification(encode_notification(method, params) + b"\n")

    def take_fds(self) -> list[int]:
        fds, self._conn.passed_fds = self._conn.passed_fds, []
        return fds

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._held is not None:
            self._held.append(coro)
        else:
            self._conn.spawn_stream(coro)

    def release(self) -> None:
        """The reply is queued: start the streams held back."""
        held, self._held = self._held or [], None
        for coro in held:
            try:
                self._conn.spawn_stream(coro)
            except ClientGone:
                pass  # spawn_stream closed the coroutine


class Connection:
    """One client: reads request lines, runs each as a task, writes replies and notifications
    through one bounded queue, and owns the streams its requests spawned."""

    def __init__(self, sock: socket.socket, dispatcher: Dispatcher, limits: ServerLimits) -> None:
        self._sock = sock
        self._dispatcher = dispatcher
        self._limits = limits
        self._queue: asyncio.Queue[object] = asyncio.Queue(limits.write_queue_messages)
        self._queued_bytes = 0
        self._requests: set[asyncio.Task[None]] = set()
        self._streams: set[asyncio.Task[None]] = set()
        self._slot_free = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.closed = False
        self._closing = False
        self.passed_fds: list[int] = []

    # -- lifecycle ---------------------------------------------------------------------------
    async def _peek_passed_fds(self) -> None:
        """File descriptors sent with the first message (``worker.exec``: the client's stdio).

        A peek installs copies of them and leaves the bytes for the stream; the stream's own
        read then drops the originals (the kernel closes fds nobody receives).
        """
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not readable.done():
                readable.set_result(None)
        loop.add_reader(self._sock.fileno(), wake)
        try:
            await readable
        finally:
            loop.remove_reader(self._sock.fileno())
        try:
            _, ancillary, _, _ = self._sock.recvmsg(
                1, socket.CMSG_SPACE(MAX_PASSED_FDS * 4), socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError, ConnectionError):
            return
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
                self.passed_fds.extend(fds)
        for fd in self.passed_fds:
            os.set_inheritable(fd, False)

    async def run(self) -> None:
        await self._peek_passed_fds()
        reader, writer = await asyncio.open_unix_connection(
            sock=self._sock, limit=self._limits.max_line_bytes)
        self._writer = writer
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._write_loop(writer))
                self._read_task = tg.create_task(self._read_loop(reader))
                await asyncio.wait([self._read_task])
                # Requests already read still get their answers (a client may half-close).
                while self._requests:
                    await asyncio.wait(set(self._requests))
                for task in self._streams:
                    task.cancel()
                self._close_queue()
        finally:
            self.closed = True
            for fd in self.passed_fds:  # passed but never taken by a request
                os.close(fd)
            self.passed_fds = []
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT_S)

    def finish(self) -> None:
        """Stop reading new requests; answer those in flight, then close (graceful shutdown)."""
        if self._read_task is not None:
            self._read_task.cancel()

    def abort(self, why: str) -> None:
        """Drop the connection now (client too slow, or gone)."""
        if self.closed:
            return
        self.closed = True
        log.warning("dropping client connection: %s", why)
        if self._writer is not None:
            self._writer.transport.abort()
        # Requests in flight run to completion (their answers are dropped): a client vanishing
        # in the middle of `worker.add` must not leave the add half-done.
        for task in (self._read_task, *self._streams):
            if task is not None:
                task.cancel()
        self._close_queue()

    # -- reading -----------------------------------------------------------------------------
    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        assert self._tg is not None
        while not self.closed:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                return  # EOF; a trailing half-sent request is not a request
            except (asyncio.LimitOverrunError, ValueError):
                self._enqueue(encode_error(
                    None, ErrorCode.INVALID_REQUEST,
                    f"invalid request: line longer than {self._limits.max_line_bytes} bytes; "
                    "closing the connection") + b"\n")
                return
            except ConnectionError:
                return
            if not line.strip():
                continue
            while len(self._requests) >= self._limits.max_requests_per_connection:
                self._slot_free.clear()
                await self._slot_free.wait()
            task = self._tg.create_task(self._run_request(line))
            self._requests.add(task)
            task.add_done_callback(self._request_done)

    def _request_done(self, task: asyncio.Task[None]) -> None:
        self._requests.discard(task)
        self._slot_free.set()

    async def _run_request(self, line: bytes) -> None:
        notify = _Notifier(self)
        try:
            reply = await self._dispatcher.handle_line(line, notify)
        except Exception:
            log.exception("unexpected failure while handling a request")
            reply = encode_error(None, ErrorCode.INTERNAL, "internal error")
        if reply is not None:
            self._enqueue(reply + b"\n")
        notify.release()

    # -- writing -----------------------------------------------------------------------------
    def _enqueue(self, data: bytes) -> None:
        if self.closed:
            return
        if self._queued_bytes + len(data) > self._limits.write_queue_bytes:
            self.abort("its write queue exceeds the byte limit (the client does not read)")
            return
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            self.abort("its write queue is full (the client does not read)")
            return
        self._queued_bytes += len(data)

    async def send_notification(self, data: bytes) -> None:
        if self.closed:
            raise ClientGone("the client disconnected")
        if self._queue.full():
            # Streams (log follow) wait for a slow reader for a while instead of dropping it.
            try:
                await asyncio.wait_for(self._queue.put(data), NOTIFY_BACKPRESSURE_TIMEOUT_S)
            except TimeoutError:
                self.abort("it has not read its notifications for too long")
                raise ClientGone("the client stopped reading") from None
            self._queued_bytes += len(data)
            return
        self._enqueue(data)
        if self.closed:
            raise ClientGone("the client disconnected")

    def _close_queue(self) -> None:
        self._closing = True
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_CLOSE)

    async def _write_loop(self, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                item = await self._queue.get()
                while True:
                    if item is _CLOSE or self.closed:
                        return
                    assert isinstance(item, bytes)
                    self._queued_bytes -= len(item)
                    writer.write(item)
                    if self._queue.empty():
                        break
                    item = self._queue.get_nowait()
                await writer.drain()
                if self._closing and self._queue.empty():
                    return
        except (ConnectionError, OSError):
            self.abort("the client went away")

    def spawn_stream(self, coro: Coroutine[Any, Any, None]) -> None:
        if self.closed or self._tg is None:
            coro.close()
            raise ClientGone("the client disconnected")
        task = self._tg.create_task(self._run_stream(coro))
        self._streams.add(task)
        task.add_done_callback(self._streams.discard)

    async def _run_stream(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except ClientGone:
            pass
        except Exception:
            log.exception("a notification stream failed")
