"""The socket server over a real Unix socket: framing, concurrency, slow/bad clients, peers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.api.listener import bind_listener
from daemon.api.server import ServerLimits
from daemon.errors import ListenerError
from tests.support.inprocess_daemon import InProcessDaemon
from tests.support.scripted_service import ScriptedService

TIMEOUT = 10.0


async def request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  payload: object) -> dict:
    writer.write(json.dumps(payload).encode() + b"\n")
    await writer.drain()
    return json.loads(await asyncio.wait_for(reader.readline(), TIMEOUT))


def req(method: str, req_id: int = 1, params: dict | None = None) -> dict:
    out: dict = {"jsonrpc": "2.0", "id": req_id, "method": method}
    if params is not None:
        out["params"] = params
    return out


@pytest.fixture
def service() -> ScriptedService:
    return ScriptedService(worker_count=2)


async def test_socket_is_0600_and_its_new_parent_0700(iii_home: Path,
                                                      service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        assert stat.S_IMODE(os.stat(d.socket_path).st_mode) == 0o600
    nested = bind_listener(iii_home / "sub" / "dir" / "s.sock")
    try:
        assert stat.S_IMODE(os.stat(iii_home / "sub" / "dir").st_mode) == 0o700
    finally:
        nested.close()
    assert not (iii_home / "sub" / "dir" / "s.sock").exists()


async def test_list_answers_while_a_slow_add_is_in_flight(iii_home: Path,
                                                          service: ScriptedService) -> None:
    service.add_gate = asyncio.Event()
    async with InProcessDaemon(iii_home, service) as d:
        r1, w1 = await d.connect()
        w1.write(json.dumps(req("worker.add", 1, {"target": "/p/slow"})).encode() + b"\n")
        await w1.drain()
        await asyncio.wait_for(service.add_entered.wait(), TIMEOUT)
        # another connection is served meanwhile
        r2, w2 = await d.connect()
        reply = await request(r2, w2, req("worker.list", 7))
        assert [w["name"] for w in reply["result"]["workers"]] == ["w0", "w1"]
        # ... and so is a second request on the same connection, answered first
        w1.write(json.dumps(req("worker.list", 2)).encode() + b"\n")
        await w1.drain()
        first = json.loads(await asyncio.wait_for(r1.readline(), TIMEOUT))
        assert first["id"] == 2
        service.add_gate.set()
        second = json.loads(await asyncio.wait_for(r1.readline(), TIMEOUT))
        assert second["id"] == 1 and second["result"]["worker"]["name"] == "slow"


async def test_garbage_line_is_a_parse_error_and_the_connection_survives(
        iii_home: Path, service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        r, w = await d.connect()
        w.write(b"\x00\xffnot json at all{{\n")
        await w.drain()
        err = json.loads(await asyncio.wait_for(r.readline(), TIMEOUT))
        assert err["id"] is None and err["error"]["code"] == -32700
        assert (await request(r, w, req("worker.list")))["result"]["workers"]


async def test_a_20mb_line_gets_an_error_and_is_closed_while_others_are_served(
        iii_home: Path, service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(d.socket_path))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        big = b'{"jsonrpc":"2.0","id":1,"method":"worker.list","params":{"x":"' \
            + b"a" * (20 * 1024 * 1024) + b'"}}\n'

        async def send_all() -> None:
            try:
                await loop.sock_sendall(sock, big)
            except OSError:
                pass  # the daemon closes the connection before taking everything

        sender = asyncio.create_task(send_all())
        received = b""
        while b"\n" not in received:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), TIMEOUT)
            assert chunk, "closed without an error line"
            received += chunk
        err = json.loads(received.split(b"\n")[0])
        assert err["error"]["code"] == -32600 and "longer than" in err["error"]["message"]
        # then the daemon closes it (EOF, or a reset since our unread bytes were discarded) ...
        try:
            while await asyncio.wait_for(loop.sock_recv(sock, 65536), TIMEOUT):
                pass
        except ConnectionResetError:
            pass
        await asyncio.wait_for(sender, TIMEOUT)
        sock.close()
        # ... and serves others all along
        r, w = await d.connect()
        assert (await request(r, w, req("worker.list")))["id"] == 1


async def test_half_sent_request_does_not_block_others(iii_home: Path,
                                                       service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        r0, w0 = await d.connect()
        w0.write(b'{"jsonrpc":"2.0","id":1,"meth')
        await w0.drain()
        r, w = await d.connect()
        assert (await request(r, w, req("worker.list", 5)))["id"] == 5
        w0.close()  # the half request is dropped with its connection, nothing answered
        assert await asyncio.wait_for(r0.read(), TIMEOUT) == b""
        assert (await request(r, w, req("worker.list", 6)))["id"] == 6


async def test_client_that_never_reads_is_dropped_and_others_keep_being_served(
        iii_home: Path, service: ScriptedService) -> None:
    service.big_result_bytes = 256 * 1024
    limits = ServerLimits(write_queue_messages=8)
    async with InProcessDaemon(iii_home, service, limits=limits) as d:
        hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.connect(str(d.socket_path))
        line = json.dumps(req("worker.logs", 1, {"name": "w0"})).encode() + b"\n"
        hog.sendall(line * 200)  # ~50 MB of answers that it never reads
        r, w = await d.connect()
        for i in range(20):
            assert (await request(r, w, req("worker.list", i)))["id"] == i

        def hog_dropped() -> bool:
            hog.setblocking(False)
            try:
                while hog.recv(1 << 20):
                    pass
                return True  # EOF: the daemon closed it
            except BlockingIOError:
                return False
            except ConnectionResetError:
                return True

        from tests.support.wait import async_wait_until

        async def dropped() -> bool:
            return hog_dropped()

        await async_wait_until(dropped, TIMEOUT, "the non-reading client to be dropped")
        hog.close()
        assert (await request(r, w, req("worker.list", 99)))["id"] == 99


async def test_batch_semantics(iii_home: Path, service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        r, w = await d.connect()
        assert (await request(r, w, []))["error"]["code"] == -32600
        batch = [req("worker.list", 1), {"jsonrpc": "2.0", "method": "worker.list"},
                 req("nope", 2), 5, req("worker.inspect", 3, {"name": "w1"})]
        replies = await request(r, w, batch)
        by_id = {x["id"]: x for x in replies}
        assert len(replies) == 4  # the notification gets nothing
        assert by_id[1]["result"]["workers"] and by_id[3]["result"]["name"] == "w1"
        assert by_id[2]["error"]["code"] == -32601 and by_id[None]["error"]["code"] == -32600
        # a batch of notifications only gets no reply at all
        w.write(json.dumps([{"jsonrpc": "2.0", "method": "worker.list"}]).encode() + b"\n")
        assert (await request(r, w, req("worker.list", 8)))["id"] == 8


async def test_notifications_get_no_response_even_on_error(iii_home: Path,
                                                           service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        r, w = await d.connect()
        for note in ({"jsonrpc": "2.0", "method": "nope"},
                     {"jsonrpc": "2.0", "method": "worker.stop", "params": {"bad": 1}},
                     {"jsonrpc": "2.0", "method": "worker.list"}):
            w.write(json.dumps(note).encode() + b"\n")
        assert (await request(r, w, req("worker.list", 3)))["id"] == 3


async def test_method_not_found_and_invalid_params(iii_home: Path,
                                                   service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        r, w = await d.connect()
        assert (await request(r, w, req("worker.fly")))["error"]["code"] == -32601
        bad = await request(r, w, req("worker.stop", 2, {"name": "w0", "timeout_s": "soon"}))
        assert bad["error"]["code"] == -32602 and "timeout_s" in bad["error"]["message"]
        bad = await request(r, w, req("worker.start", 3, {"name": "../etc"}))
        assert bad["error"]["code"] == -32602


async def test_progress_before_response_and_follow_until_client_leaves(
        iii_home: Path, service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        r, w = await d.connect()
        w.write(json.dumps(req("worker.add", 1, {"target": "/p/x", "progress": True})).encode()
                + b"\n")
        lines = [json.loads(await asyncio.wait_for(r.readline(), TIMEOUT)) for _ in range(4)]
        assert [m.get("method") for m in lines] == ["progress"] * 3 + [None]
        assert lines[0]["params"]["phase"] == "pull" and lines[3]["id"] == 1
        reply = await request(r, w, req("worker.logs", 2, {"name": "w0", "tail": 2,
                                                           "follow": True}))
        assert reply["result"]["lines"] == ["line 4", "line 5"]
        follow = [json.loads(await asyncio.wait_for(r.readline(), TIMEOUT)) for _ in range(2)]
        assert [m["params"]["line"] for m in follow] == ["new 1", "new 2"]
        assert not service.follow_cancelled.is_set()
        w.close()
        await asyncio.wait_for(service.follow_cancelled.wait(), TIMEOUT)


async def test_events_subscribe_streams_events(iii_home: Path, service: ScriptedService) -> None:
    from client.protocol.messages import EventNotification

    async with InProcessDaemon(iii_home, service) as d:
        r, w = await d.connect()
        assert (await request(r, w, req("events.subscribe")))["result"] == {}
        service.events.put_nowait(EventNotification(worker="w0", status="running", time=1.0))
        event = json.loads(await asyncio.wait_for(r.readline(), TIMEOUT))
        assert event["method"] == "event" and event["params"]["worker"] == "w0"


async def test_over_the_connection_cap_clients_get_busy(iii_home: Path,
                                                        service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service, limits=ServerLimits(max_connections=1)) as d:
        r1, w1 = await d.connect()
        assert (await request(r1, w1, req("worker.list")))["id"] == 1
        r2, _ = await d.connect()
        busy = json.loads(await asyncio.wait_for(r2.readline(), TIMEOUT))
        assert busy["error"]["code"] == -32009
        assert await asyncio.wait_for(r2.read(), TIMEOUT) == b""


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/python3").exists(),
                    reason="needs root to run a client as uid 65534")
async def test_peer_of_another_uid_is_refused(iii_home: Path, service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        # Let uid 65534 reach the socket at all, so the daemon's own uid check is what refuses.
        os.chmod(iii_home, 0o711)
        os.chmod(d.socket_path, 0o666)
        script = "\n".join([  # noqa: FLY002
            "import socket, sys",
            "s = socket.socket(socket.AF_UNIX)",
            "s.connect(sys.argv[1])",
            "try:",
            "    s.sendall(b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"worker.list\"}\\n')",
            "except OSError:",
            "    pass  # the daemon may already have closed on us",
            "sys.stdout.write(s.makefile('rb').readline().decode())",
        ])
        proc = await asyncio.create_subprocess_exec(
            "/usr/bin/python3", "-S", "-c", script, str(d.socket_path), user=65534, cwd="/",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, errout = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        assert proc.returncode == 0, errout
        reply = json.loads(out.decode().splitlines()[0])
        assert "permission denied: peer uid 65534" in reply["error"]["message"]
        assert "result" not in out.decode()
        r, w = await d.connect()  # our own uid is still served
        assert (await request(r, w, req("worker.list")))["id"] == 1


async def test_second_daemon_is_refused(iii_home: Path, service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        with pytest.raises(ListenerError, match="already running"):
            bind_listener(d.socket_path)
        r, w = await d.connect()
        assert (await request(r, w, req("worker.list")))["id"] == 1


async def test_second_daemon_process_is_refused_with_one_line(iii_home: Path,
                                                              service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        env = {**os.environ, "III_HOME": str(iii_home), "III_SOCKET": str(d.socket_path)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon", "run", env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        _, errout = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 1
        assert errout.decode().strip().startswith("error: another iii daemon is already")


def test_stale_socket_is_replaced(iii_home: Path) -> None:
    path = iii_home / "iii.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays behind, nobody listens: a daemon killed with -9
    listener = bind_listener(path)
    try:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))
        probe.close()
    finally:
        listener.close()
    assert not path.exists()


def test_a_non_socket_file_is_never_removed(iii_home: Path) -> None:
    path = iii_home / "iii.sock"
    path.write_text("precious")
    with pytest.raises(ListenerError, match="is not a socket"):
        bind_listener(path)
    assert path.read_text() == "precious"


async def test_shutdown_answers_in_flight_requests_then_closes(
        iii_home: Path, service: ScriptedService) -> None:
    service.add_gate = asyncio.Event()
    d = InProcessDaemon(iii_home, service, keep_workers=False)
    async with d:
        r, w = await d.connect()
        w.write(json.dumps(req("worker.add", 1, {"target": "/p/late"})).encode() + b"\n")
        await w.drain()
        await asyncio.wait_for(service.add_entered.wait(), TIMEOUT)
        r2, w2 = await d.connect()
        reply = await request(r2, w2, req("daemon.shutdown", 2, {"stop_workers": False}))
        assert reply == {"jsonrpc": "2.0", "id": 2, "result": {}}
        await asyncio.wait_for(d.stop.wait(), TIMEOUT)
        service.add_gate.set()
        late = json.loads(await asyncio.wait_for(r.readline(), TIMEOUT))
        assert late["result"]["worker"]["name"] == "late"
    assert service.closed_with is False
    assert not d.socket_path.exists()


async def test_internal_errors_are_generic(iii_home: Path, service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        r, w = await d.connect()
        reply = await request(r, w, req("worker.inspect", 1, {"name": "boom"}))
        assert reply["error"]["code"] == -32603
        assert "secret" not in json.dumps(reply) and "Traceback" not in json.dumps(reply)


async def test_app_errors_carry_their_data(iii_home: Path, service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        r, w = await d.connect()
        reply = await request(r, w, req("worker.add", 1, {"target": "/p/fails"}))
        assert reply["error"]["code"] == -32006
        assert reply["error"]["data"] == {"script": "install", "exit_code": 3,
                                          "output_tail": ["npm ERR! one", "npm ERR! two"]}
        reply = await request(r, w, req("worker.start", 2, {"name": "nosuch"}))
        assert reply["error"]["code"] == -32001 and "nosuch" in reply["error"]["message"]


async def test_daemon_info_reports_paths_and_protocol(iii_home: Path,
                                                      service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        r, w = await d.connect()
        info = (await request(r, w, req("daemon.info")))["result"]
        assert info["protocol"] == 1 and info["pid"] == os.getpid()
        assert info["socket"] == str(d.socket_path) and info["home"] == str(iii_home)
        assert info["engine"] == {"url": "ws://127.0.0.1:9", "reachable": False}
        assert set(info["isolation"]["backends"]) == {"libkrun", "namespace"}


@pytest.mark.skipif(shutil.which("true") is None, reason="coreutils")
def test_peer_uid_reads_our_own_uid() -> None:
    from daemon.api.server import peer_uid

    a, b = socket.socketpair(socket.AF_UNIX)
    try:
        assert peer_uid(a) == os.geteuid()
    finally:
        a.close()
        b.close()


async def test_200_concurrent_clients_are_all_served(iii_home: Path,
                                                     service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        conns = [await d.connect() for _ in range(200)]
        for i, (_, w) in enumerate(conns):
            w.write(json.dumps(req("worker.list", i)).encode() + b"\n")
        replies = await asyncio.gather(*(asyncio.wait_for(r.readline(), TIMEOUT)
                                         for r, _ in conns))
        assert sorted(json.loads(x)["id"] for x in replies) == list(range(200))


async def test_a_trickling_client_does_not_hold_up_others(iii_home: Path,
                                                          service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        slow_r, slow_w = await d.connect()
        fast_r, fast_w = await d.connect()
        payload = json.dumps(req("worker.list", 1)).encode() + b"\n"
        for i, byte in enumerate(payload[:-1]):
            slow_w.write(bytes([byte]))
            await slow_w.drain()
            if i % 10 == 0:  # meanwhile the other client gets answers
                assert (await request(fast_r, fast_w, req("worker.list", 100 + i)))["id"] == \
                    100 + i
        slow_w.write(payload[-1:])
        reply = json.loads(await asyncio.wait_for(slow_r.readline(), TIMEOUT))
        assert reply["id"] == 1 and reply["result"]["workers"]


async def test_a_client_that_vanishes_mid_request_does_not_cancel_it(
        iii_home: Path, service: ScriptedService) -> None:
    service.add_gate = asyncio.Event()
    async with InProcessDaemon(iii_home, service) as d:
        _, w = await d.connect()
        w.write(json.dumps(req("worker.add", 1, {"target": "/p/orphan", "progress": True}))
                .encode() + b"\n")
        await w.drain()
        await asyncio.wait_for(service.add_entered.wait(), TIMEOUT)
        w.transport.abort()  # gone before its progress notifications and answer
        service.add_gate.set()
        r2, w2 = await d.connect()

        async def added() -> bool:
            reply = await request(r2, w2, req("worker.list", 2))
            return "orphan" in [x["name"] for x in reply["result"]["workers"]]

        from tests.support.wait import async_wait_until

        await async_wait_until(added, TIMEOUT, "the orphaned add to complete")


def test_an_inherited_socket_is_served_locked_and_left_in_place(iii_home: Path) -> None:
    from daemon.api.listener import adopt_listener

    path = iii_home / "iii.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    listener = adopt_listener(sock)  # as systemd would hand it over
    try:
        with pytest.raises(ListenerError, match="already running"):
            bind_listener(path)
    finally:
        listener.close()
    assert path.exists()  # systemd's socket file is not ours to remove


async def test_a_stream_started_in_a_batch_follows_the_batch_reply(
        iii_home: Path, service: ScriptedService) -> None:
    async with InProcessDaemon(iii_home, service) as d:
        r, w = await d.connect()
        batch = [req("worker.logs", 1, {"name": "w0", "tail": 1, "follow": True}),
                 req("worker.list", 2)]
        w.write(json.dumps(batch).encode() + b"\n")
        first = json.loads(await asyncio.wait_for(r.readline(), TIMEOUT))
        assert isinstance(first, list) and {x["id"] for x in first} == {1, 2}
        follow = json.loads(await asyncio.wait_for(r.readline(), TIMEOUT))
        assert follow["method"] == "log" and follow["params"]["line"] == "new 1"


async def test_shutdown_ends_streams_and_closes_their_connections(
        iii_home: Path, service: ScriptedService) -> None:
    d = InProcessDaemon(iii_home, service)
    async with d:
        r, w = await d.connect()
        assert (await request(r, w, req("worker.logs", 1, {"name": "w0", "follow": True})))[
            "id"] == 1
        w.write(json.dumps(req("events.subscribe", 2)).encode() + b"\n")
        await asyncio.wait_for(service.follow_started.wait(), TIMEOUT)
        d.stop.set()
        assert d.task is not None
        await asyncio.wait_for(asyncio.shield(d.task), TIMEOUT)  # does not wait for the streams
        rest = [json.loads(x) for x in (await asyncio.wait_for(r.read(), TIMEOUT)).splitlines()]
        assert {m.get("method") or m.get("id") for m in rest} <= {"log", 2}  # then EOF
        assert service.follow_cancelled.is_set()
