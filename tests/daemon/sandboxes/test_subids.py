from __future__ import annotations

import threading
from pathlib import Path

import pytest

from daemon.errors import Unavailable
from daemon.sandboxes.subids import ID_RANGE, ensure_subordinate_range, parse_ranges
from vmm_ffi.params import IdShift


def files(tmp_path: Path, uids: str, gids: str) -> tuple[Path, Path]:
    (tmp_path / "subuid").write_text(uids)
    (tmp_path / "subgid").write_text(gids)
    return tmp_path / "subuid", tmp_path / "subgid"


@pytest.mark.parametrize(("text", "expected"), [
    ("alice:100000:65536\n", [("alice", 100000, 65536)]),
    ("# comment\nbob:1:2\nbroken\nx:y:z\n", [("bob", 1, 2)]),
    ("", []),
], ids=["one", "comments-and-junk", "empty"])
def test_parse_ranges(text: str, expected: list[tuple[str, int, int]]) -> None:
    assert parse_ranges(text) == expected


def test_missing_entry_is_appended_past_every_range(tmp_path: Path) -> None:
    subuid, subgid = files(tmp_path, "alice:100000:65536\nbob:165536:65536", "alice:100000:65536\n")
    shift = ensure_subordinate_range("iii-sandbox", subuid, subgid)
    assert shift == IdShift(uid_base=262144, gid_base=262144)  # 4 x 65536, past bob's 231072
    assert subuid.read_text().endswith("bob:165536:65536\niii-sandbox:262144:65536\n")
    assert subgid.read_text() == "alice:100000:65536\niii-sandbox:262144:65536\n"
    assert subuid.stat().st_mode & 0o777 == 0o644
    # the second call finds it and changes nothing
    before = subuid.read_text(), subgid.read_text()
    assert ensure_subordinate_range("iii-sandbox", subuid, subgid) == shift
    assert (subuid.read_text(), subgid.read_text()) == before


def test_existing_entries_are_used_as_they_are(tmp_path: Path) -> None:
    subuid, subgid = files(tmp_path, "iii-sandbox:500000:65536\n", "iii-sandbox:700000:70000\n")
    assert ensure_subordinate_range("iii-sandbox", subuid, subgid) == \
        IdShift(uid_base=500000, gid_base=700000)


def test_a_too_small_entry_is_not_used(tmp_path: Path) -> None:
    subuid, subgid = files(tmp_path, "iii-sandbox:100000:1000\n", "")
    shift = ensure_subordinate_range("iii-sandbox", subuid, subgid)
    assert shift.uid_base >= 101000 and shift.uid_base % ID_RANGE == 0


def test_concurrent_daemons_get_one_range(tmp_path: Path) -> None:
    subuid, subgid = files(tmp_path, "", "")
    results: list[IdShift] = []
    threads = [threading.Thread(target=lambda: results.append(
        ensure_subordinate_range("iii-sandbox", subuid, subgid))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert subuid.read_text().count("iii-sandbox") == 1


def test_unwritable_files_are_a_clear_error(tmp_path: Path) -> None:
    missing_dir = tmp_path / "nope" / "subuid"
    with pytest.raises(Unavailable) as failed:
        ensure_subordinate_range("iii-sandbox", missing_dir, tmp_path / "nope" / "subgid")
    assert "subordinate ids" in str(failed.value)
