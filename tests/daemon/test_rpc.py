"""The dispatcher on its own: JSON-RPC 2.0 envelope rules, params decoding, error mapping."""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.protocol.constants import ErrorCode
from client.protocol.messages import DaemonInfoResult, EngineInfo, IsolationInfo
from client.protocol.methods import METHODS
from daemon import errors
from daemon.api.rpc import ERROR_CODES, DaemonControl, Dispatcher, error_code_for
from daemon.api.services import Services
from tests.support.scripted_service import ScriptedService


class RecordingNotify:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.spawned: list[Any] = []

    async def __call__(self, method: str, params: msgspec.Struct) -> None:
        self.sent.append((method, msgspec.to_builtins(params)))

    def spawn(self, coro: Any) -> None:
        self.spawned.append(coro)
        coro.close()


def make_dispatcher(service: Any = None, **kw: Any) -> tuple[Dispatcher, list[bool]]:
    shutdowns: list[bool] = []

    async def info() -> DaemonInfoResult:
        return DaemonInfoResult(version="1", protocol=1, pid=1, home="/h", config_path="/c",
                                socket="/s", engine=EngineInfo(url="ws://x", reachable=False),
                                isolation=IsolationInfo(default="namespace", backends={}))

    control = DaemonControl(info=info, request_shutdown=shutdowns.append)
    return Dispatcher(Services.of(service or ScriptedService(worker_count=1)), control,
                      **kw), shutdowns


async def call(line: bytes | str | object, service: Any = None) -> Any:
    dispatcher, _ = make_dispatcher(service)
    raw = line if isinstance(line, bytes) else (
        line.encode() if isinstance(line, str) else json.dumps(line).encode())
    reply = await dispatcher.handle_line(raw, RecordingNotify())
    return None if reply is None else json.loads(reply)


def test_every_concrete_daemon_error_has_a_code() -> None:
    classes = [obj for _, obj in inspect.getmembers(errors, inspect.isclass)
               if issubclass(obj, errors.DaemonError) and obj.__module__ == errors.__name__]
    assert classes, "no error classes found"
    missing = [cls.__name__ for cls in classes if cls not in ERROR_CODES]
    assert not missing, f"daemon errors without a JSON-RPC code in daemon/rpc.py: {missing}"


@pytest.mark.parametrize("exc, code", [
    (errors.NotFound("x"), -32001),
    (errors.AlreadyExists("x"), -32002),
    (errors.InvalidProject("x", "f", 1, 2), -32003),
    (errors.ImageError("r", "x"), -32004),
    (errors.Unavailable("x", "y"), -32005),
    (errors.ScriptFailed("install", 3, []), -32006),
    (errors.Conflict("x"), -32007),
    (errors.InvalidState("x"), -32008),
    (errors.InvalidArgument("x"), -32602),
    (errors.Internal("x"), -32603),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v))
def test_error_codes(exc: errors.DaemonError, code: int) -> None:
    assert error_code_for(exc) == code


def test_a_subclass_defined_elsewhere_resolves_through_its_base() -> None:
    class RegistryUnreachable(errors.ImageError):
        pass

    assert error_code_for(RegistryUnreachable("r", "down")) == ErrorCode.IMAGE_ERROR


@pytest.mark.parametrize("line, code", [
    (b"{not json", -32700),
    (b"\xff\xfe", -32700),
    (b"[]", -32600),
    (b"42", -32600),
    (b'{"id":1,"method":"worker.list"}', -32600),
    (b'{"jsonrpc":"1.0","id":1,"method":"worker.list"}', -32600),
    (b'{"jsonrpc":"2.0","id":1,"method":7}', -32600),
    (b'{"jsonrpc":"2.0","id":{"a":1},"method":"worker.list"}', -32600),
    (b'{"jsonrpc":"2.0","id":1,"method":"worker.list","params":"x"}', -32600),
    (b'{"jsonrpc":"2.0","id":1,"method":"worker.jump"}', -32601),
    (b'{"jsonrpc":"2.0","id":1,"method":"worker.stop","params":["w0"]}', -32602),
    (b'{"jsonrpc":"2.0","id":1,"method":"worker.stop","params":{}}', -32602),
    (b'{"jsonrpc":"2.0","id":1,"method":"worker.stop","params":{"name":"w0","x":1}}', -32602),
    (b'{"jsonrpc":"2.0","id":1,"method":"worker.logs","params":{"name":"w0","tail":-1}}',
     -32602),
    (b'{"jsonrpc":"2.0","id":1,"method":"worker.add","params":{"target":""}}', -32602),
], ids=lambda v: v.decode(errors="replace")[:60] if isinstance(v, bytes) else str(v))
async def test_protocol_errors(line: bytes, code: int) -> None:
    reply = await call(line)
    assert reply["jsonrpc"] == "2.0" and reply["error"]["code"] == code
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]


async def test_parse_and_envelope_errors_have_id_null_unless_the_id_is_valid() -> None:
    assert (await call(b"{oops"))["id"] is None
    assert (await call({"jsonrpc": "1.0", "id": 9, "method": "x"}))["id"] == 9
    assert (await call({"jsonrpc": "2.0", "id": True, "method": "x"}))["id"] is None


async def test_success_echoes_the_id_and_encodes_the_result() -> None:
    for req_id in (1, "abc", None, 2.5):
        reply = await call({"jsonrpc": "2.0", "id": req_id, "method": "worker.list"})
        assert reply["id"] == req_id
        assert reply["result"]["workers"][0]["name"] == "w0"


async def test_notification_is_never_answered() -> None:
    assert await call({"jsonrpc": "2.0", "method": "worker.list"}) is None
    assert await call({"jsonrpc": "2.0", "method": "nope"}) is None
    assert await call({"jsonrpc": "2.0", "method": "worker.stop", "params": {"x": 1}}) is None


async def test_batch_of_notifications_gets_no_reply_and_mixed_batches_get_an_array() -> None:
    assert await call([{"jsonrpc": "2.0", "method": "worker.list"}]) is None
    reply = await call([{"jsonrpc": "2.0", "id": 1, "method": "worker.list"}, 1,
                        {"jsonrpc": "2.0", "method": "worker.list"}])
    assert [r.get("id") for r in reply] == [1, None]


async def test_service_failures_map_to_codes_with_data_and_unexpected_ones_are_generic(
        caplog: pytest.LogCaptureFixture) -> None:
    reply = await call({"jsonrpc": "2.0", "id": 1, "method": "worker.add",
                        "params": {"target": "/x/fails"}})
    assert reply["error"]["code"] == -32006
    assert reply["error"]["data"]["exit_code"] == 3
    reply = await call({"jsonrpc": "2.0", "id": 1, "method": "worker.add",
                        "params": {"target": "boom"}})
    assert reply["error"] == {"code": -32603,
                              "message": "internal error (details are in the daemon log)"}
    assert "very/secret" in caplog.text  # ... but the daemon log has the traceback


async def test_a_result_of_the_wrong_type_is_an_internal_error() -> None:
    class Broken(ScriptedService):
        async def list(self) -> Any:
            return {"workers": []}

    reply = await call({"jsonrpc": "2.0", "id": 1, "method": "worker.list"}, Broken())
    assert reply["error"]["code"] == -32603


async def test_daemon_shutdown_requests_shutdown_with_the_flag() -> None:
    dispatcher, shutdowns = make_dispatcher()
    for params, expected in (({}, True), ({"stop_workers": False}, False)):
        reply = await dispatcher.handle_line(json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "daemon.shutdown", "params": params}).encode(),
            RecordingNotify())
        assert json.loads(reply) == {"jsonrpc": "2.0", "id": 1, "result": {}}
        assert shutdowns[-1] is expected


async def test_over_the_in_flight_cap_requests_get_busy() -> None:
    service = ScriptedService()
    service.add_gate = asyncio.Event()
    dispatcher, _ = make_dispatcher(service, max_inflight=1)
    add = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "worker.add",
                      "params": {"target": "/p/a"}}).encode()
    first = asyncio.create_task(dispatcher.handle_line(add, RecordingNotify()))
    await asyncio.wait_for(service.add_entered.wait(), 5)
    busy = json.loads(await dispatcher.handle_line(add.replace(b'"id": 1', b'"id": 2'),
                                                   RecordingNotify()))
    assert busy["error"]["code"] == -32009
    service.add_gate.set()
    assert "result" in json.loads(await first)
    assert dispatcher.inflight == 0


async def test_progress_goes_through_notify() -> None:
    dispatcher, _ = make_dispatcher()
    notify = RecordingNotify()
    await dispatcher.handle_line(json.dumps({
        "jsonrpc": "2.0", "id": 1, "method": "image.pull",
        "params": {"ref": "busybox", "progress": True}}).encode(), notify)
    assert notify.sent[0][0] == "progress" and notify.sent[0][1]["phase"] == "pull"


def test_every_protocol_method_is_dispatched() -> None:
    dispatcher, _ = make_dispatcher()
    assert set(dispatcher._handlers) == set(METHODS)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
envelopes = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0"]) | json_values},
    optional={"id": json_values, "method": st.sampled_from(sorted(METHODS)) | json_values,
              "params": json_values})


@settings(max_examples=300, deadline=None)
@given(message=envelopes | json_values | st.lists(envelopes, max_size=3)
       | st.binary(max_size=40))
async def test_any_input_gets_a_valid_response_or_none(message: Any) -> None:
    raw = message if isinstance(message, bytes) else json.dumps(message).encode()
    reply = await call(raw)
    if reply is None:
        return
    for item in reply if isinstance(reply, list) else [reply]:
        assert item["jsonrpc"] == "2.0" and "id" in item
        assert ("result" in item) != ("error" in item)
        if "error" in item:
            assert isinstance(item["error"]["code"], int) and item["error"]["message"]


async def test_invalid_params_name_the_field() -> None:
    reply = await call({"jsonrpc": "2.0", "id": 1, "method": "worker.logs",
                        "params": {"name": "w0", "tail": "all"}})
    assert reply["error"]["message"] == "invalid params: tail: Expected `int`, got `str`"
