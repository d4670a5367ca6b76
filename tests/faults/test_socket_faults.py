"""Fault injection against the daemon's socket (issue 6, SPEC §11 "many clients at once; a slow or
broken client never stalls others"), through the real daemon process: 200 concurrent clients,
the connection cap (busy, then served on retry), and slowloris clients dribbling bytes."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any

from client.protocol.constants import ErrorCode
from daemon.api.server import ServerLimits
from tests.support.daemon import DaemonProcess
from tests.support.wait import async_wait_until

CLIENTS = 200
CALL_TIMEOUT_S = 30.0
RETRY_TIMEOUT_S = 10.0
FAST_CALLS = 50
SLOW_CLIENTS = 3
SLOW_BYTE_INTERVAL_S = 0.15  # ~6.7 bytes/s: a valid request takes ~7 s to arrive
CAP = ServerLimits().max_connections  # what the daemon runs with (app.py passes no limits)


class Client:
    """One raw newline-delimited JSON-RPC connection to the daemon's socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, daemon: DaemonProcess) -> Client:
        reader, writer = await asyncio.open_unix_connection(str(daemon.socket))
        return cls(reader, writer)

    async def send(self, *requests: dict[str, Any]) -> None:
        self.writer.write(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), CALL_TIMEOUT_S)
        assert line.endswith(b"\n"), f"connection closed early: {line!r}"
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def receive_many(self, count: int) -> list[dict[str, Any]]:
        return [await self.receive() for _ in range(count)]

    async def at_eof(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), CALL_TIMEOUT_S) == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, BrokenPipeError):
            pass  # the daemon dropped it first


def request(method: str, rid: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method}


async def close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients))


def assert_healthy(daemon: DaemonProcess, expected_workers: dict[str, Any]) -> None:
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log[-3000:]
    assert daemon.iii("daemon", "status").returncode == 0
    assert daemon.json("worker", "list") == expected_workers


# ------------------------------------------------------------------- 4. 200 concurrent clients


async def test_200_concurrent_clients_are_all_served(daemon_factory: Any) -> None:
    """200 connections open at once, each pipelining ``worker.list`` and ``daemon.info``.

    200 is under the cap, so must hold: no busy error, every answer correct and matched to its
    id, and the daemon healthy afterwards.
    """
    assert CLIENTS < CAP
    daemon: DaemonProcess = daemon_factory()
    expected = daemon.json("worker", "list")
    assert daemon.proc is not None

    clients = await asyncio.gather(*(Client.connect(daemon) for _ in range(CLIENTS)))
    try:
        await asyncio.gather(*(c.send(request("worker.list", 2 * n), request("daemon.info", 2 * n + 1))
                               for n, c in enumerate(clients)))
        pairs = await asyncio.gather(*(c.receive_many(2) for c in clients))
    finally:
        await close_all(clients)

    replies = [r for pair in pairs for r in pair]
    assert len(replies) == 2 * CLIENTS
    by_id = {r["id"]: r for r in replies}
    assert sorted(by_id) == list(range(2 * CLIENTS)), "every request answered exactly once"
    for rid, reply in by_id.items():
        assert "error" not in reply, reply
        if rid % 2 == 0:
            assert reply["result"] == expected
        else:
            assert reply["result"]["pid"] == daemon.proc.pid
            assert reply["result"]["protocol"] == 1
    assert_healthy(daemon, expected)


async def test_over_the_cap_a_client_gets_busy_and_is_served_on_retry(daemon_factory: Any) -> None:
    """Hold ``CAP`` connections (each proven admitted by an answer), then connect once more.

    Must hold: the extra client gets exactly one -32009 busy error (id null) and EOF, never a
    hang; once one held connection closes, a retry is served; the daemon stays healthy.
    """
    daemon: DaemonProcess = daemon_factory()
    expected = daemon.json("worker", "list")
    held: list[Client] = []
    try:
        for batch in range(0, CAP, 64):  # connect in batches: bounded backlog pressure
            held += await asyncio.gather(*(Client.connect(daemon)
                                           for _ in range(min(64, CAP - batch))))
        await asyncio.gather(*(c.send(request("worker.list", n)) for n, c in enumerate(held)))
        replies = await asyncio.gather(*(c.receive() for c in held))
        assert [r.get("result") for r in replies] == [expected] * CAP

        extra = await Client.connect(daemon)
        try:
            refusal = await extra.receive()
            assert refusal["id"] is None
            assert refusal["error"]["code"] == ErrorCode.BUSY, refusal
            assert "busy" in refusal["error"]["message"]
            assert await extra.at_eof()
        finally:
            await extra.close()

        await held.pop().close()

        async def retry() -> dict[str, Any] | None:
            client = await Client.connect(daemon)
            try:
                await client.send(request("worker.list", 1))
                reply = await client.receive()
            except ConnectionError:
                return None  # refused (busy) and closed before our request was read
            finally:
                await client.close()
            if reply.get("error", {}).get("code") == ErrorCode.BUSY:
                return None  # the closed slot is not freed yet; try again
            return reply

        served = await async_wait_until(retry, RETRY_TIMEOUT_S, "a retry to be served")
        assert served is not None and served["result"] == expected
    finally:
        await close_all(held)
    assert_healthy(daemon, expected)


# ------------------------------------------------------------------- 5. slowloris


async def test_slow_clients_never_stall_others_and_get_their_answer(daemon_factory: Any) -> None:
    """Three clients each write one valid request a byte at a time (~6.7 bytes/s).

    The daemon has no idle timeout (``daemon/api/server.py``), so must hold: while every slow client
    still has bytes to send, 50 ``worker.list`` calls from other clients all complete correctly;
    each slow client then gets its own correct answer once its line is complete.
    """
    daemon: DaemonProcess = daemon_factory()
    expected = daemon.json("worker", "list")
    payloads = [json.dumps(request("worker.list", 1000 + n)).encode() + b"\n"
                for n in range(SLOW_CLIENTS)]
    remaining = [len(p) for p in payloads]
    slow = await asyncio.gather(*(Client.connect(daemon) for _ in range(SLOW_CLIENTS)))

    async def dribble(n: int) -> dict[str, Any]:
        # The pacing *is* the fault being injected, not synchronisation.
        for i in range(len(payloads[n])):
            slow[n].writer.write(payloads[n][i:i + 1])
            await slow[n].writer.drain()
            remaining[n] -= 1
            await asyncio.sleep(SLOW_BYTE_INTERVAL_S)
        return await slow[n].receive()

    async def fast_calls() -> list[dict[str, Any]]:
        answers = []
        for n in range(FAST_CALLS):
            client = await Client.connect(daemon)
            try:
                await client.send(request("worker.list", n))
                answers.append(await client.receive())
            finally:
                await client.close()
        return answers

    try:
        dribblers = [asyncio.ensure_future(dribble(n)) for n in range(SLOW_CLIENTS)]
        fast = await fast_calls()
        still_sending = list(remaining)
        slow_replies = await asyncio.wait_for(asyncio.gather(*dribblers), CALL_TIMEOUT_S)
    finally:
        for task in dribblers:
            task.cancel()
        await close_all(slow)

    assert [r.get("result") for r in fast] == [expected] * FAST_CALLS
    assert [r["id"] for r in fast] == list(range(FAST_CALLS))
    assert all(left > 0 for left in still_sending), (
        f"the fast calls should finish while every slow client is still dribbling: {still_sending}")
    assert [r["id"] for r in slow_replies] == [1000 + n for n in range(SLOW_CLIENTS)]
    assert [r.get("result") for r in slow_replies] == [expected] * SLOW_CLIENTS
    assert_healthy(daemon, expected)


# ------------------------------------------------------------------- broken clients


def send_oversized_line(daemon: DaemonProcess, limit: int) -> tuple[dict[str, Any], bytes]:
    """Write a line longer than ``limit`` from a thread while reading the answer here.

    Plain blocking sockets on purpose: when the daemon closes mid-write, asyncio would drop the
    answer already in our receive buffer along with the broken transport.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CALL_TIMEOUT_S)
        sock.connect(str(daemon.socket))

        def write() -> None:
            try:
                sock.sendall(b"[" + b" " * limit + b"]\n")
            except OSError:
                pass  # the daemon closed before taking all of it: expected

        writer = threading.Thread(target=write)
        writer.start()
        try:
            received = b""
            try:
                while chunk := sock.recv(65536):
                    received += chunk
            except ConnectionResetError:
                pass  # closed with our unread bytes in its buffer: a reset after the answer
        finally:
            writer.join(CALL_TIMEOUT_S)
    line, _, rest = received.partition(b"\n")
    return json.loads(line), rest


async def test_broken_clients_get_clear_errors_and_never_disturb_others(
        daemon_factory: Any) -> None:
    """A half-sent request then a hang-up, a garbage line, and a line over the 16 MiB cap.

    Must hold: the hang-up is not answered and harms nothing; garbage gets -32700 (id null) and
    the same connection still serves a valid request; the oversized line gets one -32600 error
    and the connection is closed; a client connected throughout is served after each fault.
    """
    daemon: DaemonProcess = daemon_factory()
    expected = daemon.json("worker", "list")
    bystander = await Client.connect(daemon)
    try:
        async def bystander_served(rid: int) -> None:
            await bystander.send(request("worker.list", rid))
            assert (await bystander.receive()) == {"jsonrpc": "2.0", "id": rid,
                                                   "result": expected}

        half = await Client.connect(daemon)
        await half.send_raw(json.dumps(request("worker.list", 1)).encode()[:20])
        await half.close()
        await bystander_served(1)

        garbage = await Client.connect(daemon)
        try:
            await garbage.send_raw(b"this is not json\n")
            parse_error = await garbage.receive()
            assert parse_error["id"] is None
            assert parse_error["error"]["code"] == ErrorCode.PARSE_ERROR
            await garbage.send(request("worker.list", 2))
            assert (await garbage.receive())["result"] == expected
        finally:
            await garbage.close()
        await bystander_served(2)

        too_long, rest = await asyncio.to_thread(send_oversized_line, daemon,
                                                 ServerLimits().max_line_bytes)
        assert too_long["error"]["code"] == ErrorCode.INVALID_REQUEST, too_long
        assert "longer than" in too_long["error"]["message"]
        assert rest == b"", "the connection is closed after the one error line"
        await bystander_served(3)
    finally:
        await bystander.close()
    assert_healthy(daemon, expected)
