"""Human output pieces: amounts, plain tables, error lines."""

from __future__ import annotations

import pytest

from client.errors import ScriptFailed
from client.output import format_amount, print_error, print_workers
from client.protocol.messages import Worker


@pytest.mark.parametrize("current, total, unit, expected", [
    (None, None, None, ""),
    (1, 3, "layers", "1/3 layers"),
    (7, None, "files", "7 files"),
    (5, 10, "bytes", "5/10 B"),
    (1536, 3 * 1048576, "bytes", "1.5 KiB/3.0 MiB"),
    (1048576, 3 * 1048576, "bytes", "1.0/3.0 MiB"),
    (2048, None, "bytes", "2.0 KiB"),
    (2, 4, None, "2/4"),
], ids=["unknown", "layers", "no-total", "bytes", "mixed-units", "same-unit", "bytes-only",
        "no-unit"])
def test_format_amount(current: int | None, total: int | None, unit: str | None,
                       expected: str) -> None:
    assert format_amount(current, total, unit) == expected


def test_plain_worker_table_maps_types_and_engine(capsys: pytest.CaptureFixture[str]) -> None:
    print_workers([
        Worker(name="a", type="oci", status="running", pid=12, isolation="namespace",
               engine_registered=True),
        Worker(name="bb", type="binary", status="crashed", pid=None, isolation=None,
               engine_registered=False),
        Worker(name="c", type="config", status="stopped", pid=None, isolation=None,
               engine_registered=None),
    ])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows == [["NAME", "TYPE", "STATUS", "PID", "ISOLATION", "ENGINE"],
                    ["a", "OCI", "running", "12", "namespace", "yes"],
                    ["bb", "Binary", "crashed", "-", "-", "no"],
                    ["c", "Config", "stopped", "-", "-", "-"]]


@pytest.mark.parametrize("age,noted", [(None, False), (0.2, False), (3.25, True)],
                         ids=["unknown", "fresh", "stale"])
def test_stale_engine_column_is_noted(capsys: pytest.CaptureFixture[str], age: float | None,
                                      noted: bool) -> None:
    print_workers([Worker(name="a", type="oci", status="running", pid=1,
                          isolation="namespace", engine_registered=True)], age)
    out = capsys.readouterr().out
    assert ("answered 3.2s ago" in out) is noted, out


def test_no_workers_says_how_to_add_one(capsys: pytest.CaptureFixture[str]) -> None:
    print_workers([])
    assert "iii worker add" in capsys.readouterr().out


def test_error_lines(capsys: pytest.CaptureFixture[str]) -> None:
    print_error(ScriptFailed("install failed", {"output_tail": ["x"], "hint": "fix it"}))
    assert capsys.readouterr().err.splitlines() == ["error: install failed", "  | x",
                                                    "hint: fix it"]


def test_a_worker_killed_by_the_system_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    print_workers([Worker(name="a", type="local", status="backoff",
                          last_error="killed: out of memory")])
    assert "backoff (killed: out of memory)" in capsys.readouterr().out
