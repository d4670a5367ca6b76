"""A real Python iii SDK worker process that calls functions through the engine on request
(``sdk_caller`` fixture), as any worker or agent on the bus would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CALLER = textwrap.dedent("""\
    import json, os, sys, warnings
    from iii import register_worker

    iii = register_worker(os.environ["III_URL"])

    def on_event(data):
        with open(os.environ["EVENTS"], "a") as f:
            f.write(json.dumps(data) + "\\n")

    iii.register_function("t::on_event", on_event)
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd["op"] == "subscribe":
                with warnings.catch_warnings():  # deprecated in 0.25 in favour of observe()
                    warnings.simplefilter("ignore", DeprecationWarning)
                    iii.register_trigger({"type": "worker::lifecycle",
                                          "function_id": "t::on_event", "config": cmd["config"]})
                out = {"result": None}
            else:
                out = {"result": iii.trigger({"function_id": cmd["function_id"],
                                              "payload": cmd["payload"],
                                              "timeout_ms": cmd.get("timeout_ms", 30000)})}
        except Exception as exc:
            out = {"error": {"code": getattr(exc, "code", type(exc).__name__),
                             "message": getattr(exc, "message", str(exc))}}
        print(json.dumps(out), flush=True)
""")


class Caller:
    """A real SDK worker process that calls functions through the engine on request."""

    def __init__(self, proc: subprocess.Popen[str], events: Path) -> None:
        self.proc, self.events_path = proc, events

    def _send(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the SDK caller exited"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def call(self, function_id: str, payload: Any, timeout_ms: int = 30000) -> Any:
        answer = self._send({"op": "call", "function_id": function_id, "payload": payload,
                             "timeout_ms": timeout_ms})
        assert "error" not in answer, answer
        return answer["result"]

    def fails(self, function_id: str, payload: Any, timeout_ms: int = 30000) -> dict[str, str]:
        answer = self._send({"op": "call", "function_id": function_id, "payload": payload,
                             "timeout_ms": timeout_ms})
        assert "error" in answer, answer
        error: dict[str, str] = answer["error"]
        return error

    def subscribe(self, config: dict[str, Any]) -> None:
        self._send({"op": "subscribe", "config": config})

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        return [json.loads(ln) for ln in self.events_path.read_text().splitlines()]


@pytest.fixture
def sdk_caller(tmp_path: Path) -> Iterator[Callable[[str], Caller]]:
    procs: list[subprocess.Popen[str]] = []
    home = tmp_path / "sdk-home"  # the SDK writes ~/.iii/run/ markers: never the real home
    home.mkdir()

    def start(url: str) -> Caller:
        events = tmp_path / f"events-{len(procs)}.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
        env.update(HOME=str(home), III_URL=url, III_WORKER_NAME="api-caller",
                   EVENTS=str(events))
        proc = subprocess.Popen([sys.executable, "-c", CALLER], env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        procs.append(proc)
        return Caller(proc, events)

    yield start
    for proc in procs:
        proc.kill()
        proc.communicate()
