"""``iii worker status NAME``: one worker at a glance, live.

A snapshot is ``worker.inspect`` plus the last log lines. The live view re-renders when
something happens, never by asking the daemon on a timer: one connection follows
``events.subscribe`` (a state change fetches a fresh ``worker.inspect``), another follows
``worker.logs`` (new lines are appended). Only the uptime is re-drawn by the clock.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from client.rpc_client import RpcClient, decode

if TYPE_CHECKING:
    from client.protocol.messages import WorkerInspectResult

LOG_LINES = 10
REDRAWS_PER_S = 2  # the uptime's clock; the data itself only changes on notifications

# SPEC §9 states as the phases a user watches
PHASES = {"preparing": "preparing", "installing": "installing", "starting": "starting",
          "running": "running", "backoff": "backoff", "crashed": "backoff",
          "stopping": "stopping", "stopped": "stopped"}


class Snapshot(NamedTuple):
    worker: WorkerInspectResult
    log_tail: list[str]  # the last lines


def _fetch(name: str) -> tuple[Any, list[str]]:
    """(``worker.inspect``'s result as the daemon sent it, the last log lines)."""
    from client.protocol.messages import WorkerLogsResult

    with RpcClient() as client:
        worker = client.call("worker.inspect", {"name": name})
        logs = client.call("worker.logs", {"name": name, "tail": LOG_LINES},
                           result_type=WorkerLogsResult)
    return worker, logs.lines


def snapshot(name: str) -> Snapshot:
    from client.protocol.messages import WorkerInspectResult

    worker, lines = _fetch(name)
    return Snapshot(decode(worker, WorkerInspectResult, "answer to worker.inspect"), lines)


def _uptime(started_at: Any, status: str) -> str:
    if status != "running" or not isinstance(started_at, (int, float)):
        return "-"
    seconds = int(time.time() - started_at)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def rows(snap: Snapshot) -> list[tuple[str, str]]:
    """The status block as (label, value) pairs (shared by the plain and the live view)."""
    w = snap.worker
    detail = w.isolation_detail
    engine = {True: "registered", False: "not registered", None: "unknown"}[w.engine_registered]
    isolation: str = w.isolation or "none"
    if detail is not None:
        isolation += f" ({detail.network}; ids {detail.id_map}; limits {detail.limits})"
    return [("worker", w.name), ("phase", PHASES.get(w.status, w.status)),
            ("pid", str(w.pid or "-")),
            ("uptime", _uptime(w.started_at, w.status)),
            ("restarts", str(w.restarts)),
            ("last exit", "-" if w.last_exit_code is None else str(w.last_exit_code)),
            ("isolation", isolation), ("engine", engine)]


def print_once(name: str, as_json: bool) -> None:
    if as_json:  # the daemon's worker.inspect result as it sent it, and the last lines
        worker, lines = _fetch(name)
        print(json.dumps({"worker": worker, "log_tail": lines}))
        return
    snap = snapshot(name)
    for label, value in rows(snap):
        print(f"{label + ':':<11} {value}")
    print("log:")
    for line in snap.log_tail:
        print(f"  {line}")


class LiveStatus:
    """The live view's state, fed by two notification streams."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.snap = snapshot(name)
        self.lock = threading.Lock()
        self.changed = threading.Event()

    def on_event(self, method: str, params: Any) -> None:
        from client.protocol.messages import EventNotification

        if method == "event" and decode(params, EventNotification, "event").worker == self.name:
            fresh = snapshot(self.name)
            with self.lock:
                self.snap = fresh._replace(log_tail=self.snap.log_tail)
            self.changed.set()

    def on_log(self, method: str, params: Any) -> None:
        from client.protocol.messages import LogNotification

        if method == "log":
            line = decode(params, LogNotification, "log notification").line
            with self.lock:
                self.snap = self.snap._replace(
                    log_tail=(self.snap.log_tail + [line])[-LOG_LINES:])
            self.changed.set()

    def render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self.lock:
            snap = self.snap
        table = Table.grid(padding=(0, 2))
        for label, value in rows(snap):
            table.add_row(Text(label, style="bold"), Text(value))
        log = Text("\n".join(snap.log_tail) or "(no output yet)", style="dim")
        return Group(table, Text("log:", style="bold"), log)


def _follow(method: str, params: dict[str, Any], handler: Any) -> None:
    try:
        with RpcClient(autostart=False) as client:
            client.call(method, params)
            client.follow(handler)
    except Exception:  # noqa: BLE001 - the view goes on; the daemon's absence shows as stale
        return


def watch(name: str) -> None:
    """The live view until Ctrl-C."""
    from rich.live import Live

    state = LiveStatus(name)
    for method, params, handler in (("events.subscribe", {}, state.on_event),
                                    ("worker.logs", {"name": name, "tail": 0, "follow": True},
                                     state.on_log)):
        threading.Thread(target=_follow, args=(method, params, handler), daemon=True).start()
    with Live(state.render(), refresh_per_second=REDRAWS_PER_S, transient=False) as live:
        while True:
            state.changed.wait(1 / REDRAWS_PER_S)
            state.changed.clear()
            live.update(state.render())


def run_status(name: str, as_json: bool, live: bool) -> None:
    if as_json or not live or not sys.stdout.isatty():
        print_once(name, as_json)
        return
    try:
        watch(name)
    except KeyboardInterrupt:
        pass
