"""The daemon's socket server: newline-delimited JSON-RPC 2.0 over a Unix socket (SPEC §11).

One task per connection (``daemon/api/connection.py``: its requests, write queue and streams).
Peers of another uid are refused; over ``max_connections`` a client gets a busy error (-32009).

    server = RpcServer(dispatcher)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(server.serve(listener.sock))
        ...
        await server.shutdown(timeout=5)   # close listener, finish, wait, cancel (STYLE §6)
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import sys

from client.protocol.constants import ErrorCode
from daemon.api.connection import Connection, ServerLimits
from daemon.api.rpc import Dispatcher, encode_error

__all__ = ["RpcServer", "ServerLimits", "peer_uid"]

log = logging.getLogger("iii.daemon.server")

ACCEPT_ERROR_BACKOFF_S = 0.1  # after EMFILE and friends, before accepting again
REFUSAL_SEND_TIMEOUT_S = 1.0  # a refused peer gets this long to take its error line


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED / LOCAL_PEERCRED)."""
    if sys.platform.startswith("linux"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", creds)[1])
    # BSD/macOS getpeereid(): struct xucred {u_int cr_version; uid_t cr_uid; ...}
    sol_local, local_peercred = 0, 0x001
    raw = sock.getsockopt(sol_local, local_peercred, 76)
    return int(struct.unpack_from("Ii", raw)[1])


class RpcServer:
    """Accepts connections on a listening Unix socket and serves JSON-RPC on each."""

    def __init__(self, dispatcher: Dispatcher, limits: ServerLimits | None = None) -> None:
        self._dispatcher = dispatcher
        self._limits = limits or ServerLimits()
        self._connections: dict[Connection, asyncio.Task[None]] = {}
        self._accept_task: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._listen_sock: socket.socket | None = None
        self._uid = os.geteuid()
        self.accepting = asyncio.Event()

    async def serve(self, listen_sock: socket.socket) -> None:
        """Serve until :meth:`shutdown` has finished every connection."""
        self._listen_sock = listen_sock
        listen_sock.setblocking(False)
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._accept_task = tg.create_task(self._accept_loop(listen_sock))

    async def _accept_loop(self, listen_sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.accepting.set()
        while True:
            try:
                sock, _ = await loop.sock_accept(listen_sock)
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(ACCEPT_ERROR_BACKOFF_S)
                continue
            self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        assert self._tg is not None
        try:
            uid = peer_uid(sock)
        except OSError as exc:
            log.warning("cannot read peer credentials: %s", exc)
            sock.close()
            return
        if uid != self._uid:
            log.warning("refused a connection from uid %d (the daemon runs as uid %d)",
                        uid, self._uid)
            self._tg.create_task(self._refuse(
                sock, ErrorCode.INVALID_REQUEST,
                f"permission denied: peer uid {uid} is not the daemon's uid {self._uid}"))
            return
        if len(self._connections) >= self._limits.max_connections:
            self._tg.create_task(self._refuse(
                sock, ErrorCode.BUSY,
                f"daemon busy: {self._limits.max_connections} clients connected; retry"))
            return
        conn = Connection(sock, self._dispatcher, self._limits)
        task = self._tg.create_task(self._run_connection(conn))
        self._connections[conn] = task

    async def _run_connection(self, conn: Connection) -> None:
        try:
            await conn.run()
        except Exception:
            log.exception("a client connection failed")
        finally:
            self._connections.pop(conn, None)

    async def _refuse(self, sock: socket.socket, code: int, message: str) -> None:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        try:
            line = encode_error(None, code, message) + b"\n"
            await asyncio.wait_for(loop.sock_sendall(sock, line), REFUSAL_SEND_TIMEOUT_S)
        except (OSError, TimeoutError):
            pass
        finally:
            sock.close()

    async def shutdown(self, timeout: float) -> None:
        """Graceful stop: close the listener, finish connections, wait, cancel the rest."""
        if self._accept_task is not None:
            self._accept_task.cancel()
        if self._listen_sock is not None:
            self._listen_sock.close()
        self.accepting.clear()
        for conn in list(self._connections):
            conn.finish()
        tasks = list(self._connections.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("cancelled %d connection(s) still busy after %.1fs",
                            len(pending), timeout)
                await asyncio.wait(pending)
