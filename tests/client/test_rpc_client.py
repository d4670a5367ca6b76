"""The sync client library against the real server (threaded) and a real daemon process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import errors
from client.errors import DaemonUnavailable, from_rpc_error
from client.rpc_client import RpcClient, default_socket_path, stop_daemon
from tests.support.inprocess_daemon import ThreadedDaemon
from tests.support.scripted_service import ScriptedService
from tests.support.wait import wait_until


@pytest.fixture
def daemon(iii_home: Path) -> Iterator[ThreadedDaemon]:
    with ThreadedDaemon(iii_home, lambda: ScriptedService(worker_count=2)) as d:
        yield d


def test_call_returns_the_decoded_result(daemon: ThreadedDaemon) -> None:
    with RpcClient(daemon.socket_path, autostart=False) as client:
        workers = client.call("worker.list")["workers"]
        assert [w["name"] for w in workers] == ["w0", "w1"]
        raw = client.call_raw("worker.list")  # same connection, next id
        assert json.loads(raw) == {"workers": workers}  # None fields are left out


def test_notifications_before_the_response_reach_the_handler(daemon: ThreadedDaemon) -> None:
    seen: list[tuple[str, dict]] = []
    with RpcClient(daemon.socket_path, autostart=False) as client:
        result = client.call("worker.add", {"target": "/p/n", "progress": True},
                             on_notification=lambda m, p: seen.append((m, p)))
    assert result["worker"]["name"] == "n"
    assert [(m, p["current"]) for m, p in seen] == [("progress", 1), ("progress", 2),
                                                    ("progress", 3)]


@pytest.mark.parametrize("method, params, cls, code", [
    ("worker.start", {"name": "nosuch"}, errors.NotFound, -32001),
    ("worker.add", {"target": "/x/fails"}, errors.ScriptFailed, -32006),
    ("worker.fly", None, errors.MethodNotFound, -32601),
    ("worker.stop", {"nme": "x"}, errors.InvalidParams, -32602),
    ("worker.inspect", {"name": "boom"}, errors.InternalError, -32603),
], ids=["not-found", "script-failed", "no-method", "bad-params", "internal"])
def test_error_codes_come_back_as_exceptions(daemon: ThreadedDaemon, method: str,
                                             params: dict | None, cls: type, code: int) -> None:
    with RpcClient(daemon.socket_path, autostart=False) as client, pytest.raises(cls) as info:
        client.call(method, params)
    assert info.value.code == code and info.value.message


def test_script_failure_keeps_its_data(daemon: ThreadedDaemon) -> None:
    with RpcClient(daemon.socket_path, autostart=False) as client, \
            pytest.raises(errors.ScriptFailed) as info:
        client.call("worker.add", {"target": "/x/fails"})
    assert info.value.data["output_tail"] == ["npm ERR! one", "npm ERR! two"]


@pytest.mark.parametrize("code, cls", [
    (-32700, errors.RpcError), (-32600, errors.InvalidRequest), (-32601, errors.MethodNotFound),
    (-32602, errors.InvalidParams), (-32603, errors.InternalError), (-32001, errors.NotFound),
    (-32002, errors.AlreadyExists), (-32003, errors.InvalidProject),
    (-32004, errors.ImageError), (-32005, errors.IsolationUnavailable),
    (-32006, errors.ScriptFailed), (-32007, errors.Conflict), (-32008, errors.InvalidState),
    (-32009, errors.Busy), (-1, errors.RpcError),
], ids=str)
def test_from_rpc_error_maps_every_code(code: int, cls: type) -> None:
    exc = from_rpc_error({"code": code, "message": "m", "data": {"hint": "do this"}})
    assert type(exc) is cls and exc.code == code and exc.hint == "do this"


def test_no_daemon_and_no_autostart_is_a_clear_error(iii_home: Path) -> None:
    with pytest.raises(DaemonUnavailable) as info:
        RpcClient(autostart=False).call("daemon.info")
    assert str(iii_home / "iii.sock") in info.value.message
    assert "iii daemon run" in (info.value.hint or "")


def test_socket_path_follows_env(tmp_path: Path) -> None:
    assert default_socket_path({"III_HOME": str(tmp_path)}) == tmp_path / "iii.sock"
    assert default_socket_path({"III_HOME": "/x", "III_SOCKET": "/y.sock"}) == Path("/y.sock")


def test_autostart_spawns_a_real_daemon_that_survives_and_stops(iii_home: Path) -> None:
    env = {**os.environ, "III_HOME": str(iii_home), "III_URL": "ws://127.0.0.1:9"}
    env.pop("III_NO_AUTOSTART", None)
    with RpcClient(env=env) as client:
        info = client.call("daemon.info")
    assert info["home"] == str(iii_home) and info["pid"] != os.getpid()
    assert (iii_home / "daemon.log").exists()
    # the daemon is in its own session: not our child's process group
    assert os.getsid(info["pid"]) == info["pid"]
    stop_daemon(stop_workers=True, deadline_s=30, socket_path=iii_home / "iii.sock")
    wait_until(lambda: not Path(f"/proc/{info['pid']}").exists()
               or "Z" in Path(f"/proc/{info['pid']}/stat").read_text().split()[2],
               10, "the daemon to exit")
    assert not (iii_home / "iii.sock").exists()


def test_autostart_reports_a_daemon_that_cannot_start(iii_home: Path) -> None:
    (iii_home / "daemon.yaml").write_text("isolation: docker\n")
    env = {**os.environ, "III_HOME": str(iii_home)}
    env.pop("III_NO_AUTOSTART", None)
    with pytest.raises(DaemonUnavailable) as info:
        RpcClient(env=env).call("daemon.info")
    assert "exited with status 1" in info.value.message
    assert "isolation" in info.value.message and "daemon.log" in (info.value.hint or "")


def test_client_imports_nothing_heavy() -> None:
    code = ("import sys, client.cli, client.rpc_client, client.output, client.actions, "
            "client.cli_grammar;"
            "bad = [m for m in ('asyncio', 'aiohttp', 'rich', 'typer', 'daemon', 'msgspec', "
            "'client.protocol.messages') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_call_raw_is_byte_for_byte_what_the_daemon_sent(daemon: ThreadedDaemon) -> None:
    import socket as so

    raw = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    raw.connect(str(daemon.socket_path))
    raw.sendall(b'{"jsonrpc":"2.0","id":1,"method":"worker.list"}\n')
    line = raw.makefile("rb").readline()
    raw.close()
    with RpcClient(daemon.socket_path, autostart=False) as client:
        assert b'{"jsonrpc":"2.0","id":1,"result":' + client.call_raw("worker.list") + b"}\n" \
            == line


def test_the_fast_path_shares_the_protocol_constants() -> None:
    from client import rpc_client
    from client.protocol import constants

    assert rpc_client.MAX_LINE_BYTES is constants.MAX_LINE_BYTES
    assert errors.ErrorCode is constants.ErrorCode


def test_a_hung_daemon_is_reported_after_the_reply_timeout(iii_home: Path) -> None:
    import socket as so

    path = iii_home / "iii.sock"
    hung = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    hung.bind(str(path))
    hung.listen()  # accepts (backlog) but never answers
    try:
        with RpcClient(path, autostart=False, reply_timeout_s=0.3) as client, \
                pytest.raises(DaemonUnavailable, match="did not answer within 0s"):
            client.call("daemon.info")
    finally:
        hung.close()


class OneAnswerDaemon:
    """A socket that answers every request with ``result`` (whatever its shape)."""

    def __init__(self, path: Path, result: object) -> None:
        import socket as so
        import threading

        self._server = so.socket(so.AF_UNIX, so.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen()
        self._result = result
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                for line in lines:
                    answer = {"jsonrpc": "2.0", "id": json.loads(line)["id"],
                              "result": self._result}
                    conn.sendall(json.dumps(answer).encode() + b"\n")

    def close(self) -> None:
        self._server.close()


def test_a_result_of_the_wrong_shape_is_a_protocol_error(iii_home: Path) -> None:
    from client.protocol.messages import WorkerListResult

    path = iii_home / "iii.sock"
    daemon = OneAnswerDaemon(path, {"workers": [{"name": 5, "type": "local"}]})
    try:
        with RpcClient(path, autostart=False) as client, \
                pytest.raises(errors.ProtocolError) as info:
            client.call("worker.list", result_type=WorkerListResult)
        assert info.value.message == ("cannot read the daemon's answer to worker.list: "
                                      "Expected `str`, got `int` - at `$.workers[0].name`")
        assert "another version" in (info.value.hint or "")
    finally:
        daemon.close()


@pytest.mark.parametrize("argv", [("worker", "list"), ("worker", "inspect", "w"),
                                  ("image", "list"), ("daemon", "status")], ids=" ".join)
def test_the_cli_reports_a_result_it_cannot_read_in_one_line(iii_home: Path,
                                                             argv: tuple[str, ...]) -> None:
    path = iii_home / "iii.sock"
    daemon = OneAnswerDaemon(path, {"workers": "many", "images": 3, "name": None})
    env = {**os.environ, "III_HOME": str(iii_home), "III_SOCKET": str(path),
           "III_NO_AUTOSTART": "1"}
    try:
        out = subprocess.run([str(Path(sys.executable).with_name("iii")), *argv], env=env,
                             capture_output=True, text=True, check=False, timeout=30)
    finally:
        daemon.close()
    assert out.returncode == 1, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 2 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("error: cannot read the daemon's answer to ")
    assert lines[1].startswith("hint: the daemon may be another version")
    assert out.stdout == ""
