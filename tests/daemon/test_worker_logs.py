"""Worker logs: tail across rotated files, copy-truncate rotation, follow through a rotation."""

from __future__ import annotations

import asyncio
from pathlib import Path

from daemon.workers.commands.logs import LogFollower, follow, rotate_if_needed, tail


def append(log: Path, text: str) -> None:
    with open(log, "a") as f:
        f.write(text)


def test_tail_reads_back_into_rotated_files(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    (tmp_path / "worker.log.2").write_text("a\nb\n")
    (tmp_path / "worker.log.1").write_text("c\nd\n")
    log.write_text("e\n")
    assert tail(log, 2) == ["d", "e"]
    assert tail(log, 4) == ["b", "c", "d", "e"]
    assert tail(log, 100) == ["a", "b", "c", "d", "e"]
    assert tail(log, 0) == []
    assert tail(tmp_path / "missing.log", 5) == []


def test_rotation_keeps_the_configured_number_of_files(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    for round_ in range(5):
        log.write_text(f"round {round_}\n" * 10)
        assert rotate_if_needed(log, max_bytes=50, keep=3)
        assert log.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "worker.log", "worker.log.1", "worker.log.2", "worker.log.3"]
    assert (tmp_path / "worker.log.1").read_text().startswith("round 4")
    assert (tmp_path / "worker.log.3").read_text().startswith("round 2")
    log.write_text("small\n")
    assert not rotate_if_needed(log, max_bytes=50, keep=3)


def test_follower_sees_appends_and_survives_copy_truncate_and_replacement(
        tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("old line\n")
    follower = LogFollower(log)
    assert follower.poll() == []  # starts at the end: history is what `tail` is for
    with open(log, "a") as f:
        f.write("one\ntw")
    assert follower.poll() == ["one"]
    with open(log, "a") as f:
        f.write("o\n")
    assert follower.poll() == ["two"]
    with open(log, "a") as f:
        f.write("x" * 100 + "\n")
    assert rotate_if_needed(log, max_bytes=10, keep=3)
    with open(log, "a") as f:
        f.write("after rotation\n")
    assert follower.poll() == ["after rotation"]
    log.unlink()
    assert follower.poll() == []
    log.write_text("new file\n")
    assert follower.poll() == ["new file"]


async def test_follow_streams_lines_until_cancelled(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("")
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def on_line(line: str) -> None:
        await seen.put(line)

    task = asyncio.create_task(follow(log, on_line))
    try:
        # The follower may start after the first write: keep appending until a line arrives.
        for i in range(100):
            await asyncio.to_thread(append, log, f"line {i}\n")
            try:
                first = await asyncio.wait_for(seen.get(), 0.1)
                break
            except TimeoutError:
                continue
        assert first.startswith("line ")
    finally:
        task.cancel()
