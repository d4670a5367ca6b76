"""Ephemeral sandboxes (``sandbox.*`` on the socket) against the real daemon, the real registry
and real namespace sandboxes: lifecycle, fs, limits, bad input, isolation, cleanup."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client.errors import RpcError
from client.rpc_client import RpcClient
from tests.support.daemon import DaemonProcess
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow


def sandbox_yaml(python_image: str, busybox_image: str, **extra: Any) -> str:
    """daemon.yaml with a ``sandboxes:`` section (each value written as JSON, which is YAML)."""
    policy = {"catalog": {"python": python_image, "shell": busybox_image}, **extra}
    return "sandboxes:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in policy.items())


class Api:
    """``sandbox.*`` calls on the daemon's socket."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def __call__(self, method: str, **params: Any) -> Any:
        with RpcClient(self.socket, autostart=False) as client:
            return client.call(f"sandbox.{method}", params)

    def fails(self, method: str, **params: Any) -> dict[str, Any]:
        with pytest.raises(RpcError) as info:
            self(method, **params)
        data = info.value.data
        assert isinstance(data, dict), info.value
        return data


@pytest.fixture
def sandbox_api(daemon_factory: Callable[..., DaemonProcess], iii_home: Path, python_image: str,
                busybox_image: str) -> Iterator[Callable[..., Api]]:
    def start(**policy: Any) -> Api:
        (iii_home / "daemon.yaml").write_text(sandbox_yaml(python_image, busybox_image,
                                                           **policy))
        daemon = daemon_factory()
        return Api(daemon.socket)
    yield start


def sandbox_dirs(home: Path) -> list[str]:
    managed = home / "sandboxes" / "managed"
    return sorted(os.listdir(managed)) if managed.is_dir() else []


def test_create_write_exec_read_stop(sandbox_api: Callable[..., Api], iii_home: Path) -> None:
    api = sandbox_api()
    sid = api("create", image="python")["sandbox_id"]
    assert api("fs.write", sandbox_id=sid, path="/work/main.py", parents=True,
               content="import sys\nprint(sys.stdin.read().upper())\n")["bytes_written"] == 43
    out = api("exec", sandbox_id=sid, cmd="python3 /work/main.py",
              stdin=base64.b64encode(b"hello").decode())
    assert (out["stdout"], out["exit_code"], out["success"]) == ("HELLO\n", 0, True)
    assert api("exec", sandbox_id=sid, argv=["sh", "-c", "echo made > /work/out.txt"])[
        "exit_code"] == 0
    assert api("fs.read", sandbox_id=sid, path="/work/out.txt")["body"] == "made\n"
    listed = api("list")["sandboxes"]
    assert [(s["sandbox_id"], s["image"], s["exec_slots_free"]) for s in listed] == \
        [(sid, "python", 4)]
    assert sandbox_dirs(iii_home) == [sid]
    assert api("stop", sandbox_id=sid, wait=True) == {"sandbox_id": sid, "stopped": True}
    assert api("list")["sandboxes"] == []
    assert sandbox_dirs(iii_home) == []
    error = api.fails("exec", sandbox_id=sid, cmd="true")
    assert error["code"] == "S002" and error["type"] == "validation"
