"""Human output of the CLI: rich tables and progress bars on a TTY, plain lines otherwise.

rich is imported only when a TTY needs it, and msgspec with the wire types only when a
result is read (start-up time matters; SPEC §12): the types below are annotations.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self, TextIO

from client.errors import CliError

if TYPE_CHECKING:
    from client.protocol.messages import Worker

__all__ = [
    "TYPE_LABELS",
    "ProgressView",
    "print_error",
    "print_json_raw",
    "print_kv",
    "print_table",
    "print_warnings",
    "print_workers",
    "stdout_is_tty",
]

TYPE_LABELS = {"local": "Local", "oci": "OCI", "binary": "Binary", "config": "Config"}
WORKER_COLUMNS = ("NAME", "TYPE", "STATUS", "PID", "ISOLATION", "ENGINE")
STALE_ENGINE_S = 1.0  # worker list notes an ENGINE column older than this
PLAIN_PROGRESS_MIN_INTERVAL_S = 1.0  # same-phase progress lines are rate-limited when not a TTY


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def print_json_raw(raw: bytes) -> None:
    """Print the daemon's JSON result verbatim (``--json``)."""
    sys.stdout.buffer.write(raw + b"\n")
    sys.stdout.flush()


def print_error(exc: CliError, stream: TextIO | None = None) -> None:
    """``error: …`` and, when known, ``hint: …`` on stderr; script output tails indented."""
    out = stream or sys.stderr
    print(f"error: {exc.message}", file=out)
    data = getattr(exc, "data", None)
    if isinstance(data, dict) and isinstance(data.get("output_tail"), list):
        for line in data["output_tail"]:
            print(f"  | {line}", file=out)
    if exc.hint:
        print(f"hint: {exc.hint}", file=out)


def print_warnings(warnings: Sequence[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _engine_label(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _status_cell(worker: Worker) -> str:
    """The status; after a kill by the system (OOM), why, e.g. "backoff (killed: out of ...)"."""
    status, error = worker.status, worker.last_error
    if status in ("crashed", "backoff") and error is not None and error.startswith("killed:"):
        return f"{status} ({error})"
    return status


def worker_row(worker: Worker) -> list[str]:
    return [
        worker.name,
        TYPE_LABELS.get(worker.type, worker.type),
        _status_cell(worker),
        "-" if worker.pid is None else str(worker.pid),
        worker.isolation or "-",
        _engine_label(worker.engine_registered),
    ]


def print_table(columns: tuple[str, ...] | list[str], rows: list[list[str]]) -> None:
    """A rich table on a TTY; aligned plain columns otherwise (easy to grep and cut)."""
    if stdout_is_tty():
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in columns:
            table.add_column(col)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    for row in [list(columns), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def print_workers(workers: Sequence[Worker], engine_age_s: float | None = None,
                  config_error: str | None = None) -> None:
    """The worker table; a note when the ENGINE column is older than :data:`STALE_ENGINE_S`
    (the engine did not answer in time, so the daemon showed its last answer), a warning when
    config.yaml is broken (the table is then its last good state)."""
    if config_error:
        print(f"warning: config.yaml is broken ({config_error}); showing the last good state "
              "until it is fixed", file=sys.stderr)
    if not workers:
        print("no workers (add one with `iii worker add ./my-project`)")
        return
    print_table(WORKER_COLUMNS, [worker_row(w) for w in workers])
    if engine_age_s is not None and engine_age_s > STALE_ENGINE_S:
        print(f"(ENGINE as the engine answered {engine_age_s:.1f}s ago: it is slow to answer)")


def print_kv(pairs: list[tuple[str, Any]]) -> None:
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        print(f"{key.ljust(width)}  {'-' if value is None else value}")


def _size(n: float) -> str:
    for suffix in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or suffix == "GiB":
            return f"{n:.0f} {suffix}" if suffix == "B" else f"{n:.1f} {suffix}"
        n /= 1024
    raise AssertionError("unreachable")


def format_amount(current: float | None, total: float | None, unit: str | None) -> str:
    """``3/10 layers``, ``1.5/20.0 MiB`` (bytes made readable), ``7 files``; empty if unknown."""
    if current is None:
        return ""
    if unit == "bytes":
        if not total:
            return _size(current)
        done, whole = _size(current), _size(total)
        same_unit = done.split()[1] == whole.split()[1]
        return f"{done.split()[0] if same_unit else done}/{whole}"
    suffix = f" {unit}" if unit else ""
    return f"{current}/{total}{suffix}" if total else f"{current}{suffix}"


class ProgressView:
    """Renders ``progress`` notifications: bars on a TTY, one plain line per step otherwise.

        with ProgressView() as view:
            client.call("image.pull", {"ref": ref, "progress": True}, on_notification=view)
    """

    def __init__(self, tty: bool | None = None) -> None:
        self._tty = stdout_is_tty() if tty is None else tty
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._last_plain: dict[str, tuple[str, float]] = {}

    def __enter__(self) -> Self:
        if self._tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      TextColumn("{task.fields[amount]}"), TimeElapsedColumn(),
                                      transient=False)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, method: str, params: Any) -> None:
        if method != "progress":
            return
        from client.protocol.messages import ProgressNotification
        from client.rpc_client import decode

        note = decode(params, ProgressNotification, "progress notification")
        if note.message.startswith("warning: "):  # a warning is a line of its own, on stderr
            print(note.message, file=sys.stderr, flush=True)
            return
        if self._progress is not None:
            self._render_bar(note.phase, note.message, note.current, note.total, note.unit)
        else:
            self._render_plain(note.phase, note.message, note.current, note.total, note.unit)

    def _render_bar(self, phase: str, message: str, current: int | None, total: int | None,
                    unit: str | None) -> None:
        description = f"{phase}: {message}" if message else phase
        amount = format_amount(current, total, unit)
        task = self._tasks.get(phase)
        if task is None:
            task = self._progress.add_task(description, total=total, amount=amount)
            self._tasks[phase] = task
        self._progress.update(task, description=description, completed=current or 0,
                              total=total, amount=amount)

    def _render_plain(self, phase: str, message: str, current: int | None, total: int | None,
                      unit: str | None) -> None:
        now = time.monotonic()
        last = self._last_plain.get(phase)
        done = current is not None and total is not None and current >= total
        if last is not None and last[0] == message and not done \
                and now - last[1] < PLAIN_PROGRESS_MIN_INTERVAL_S:
            return
        self._last_plain[phase] = (message, now)
        amount = format_amount(current, total, unit)
        print(f"{phase}: {message}" + (f" ({amount})" if amount else ""), flush=True)
