from __future__ import annotations

from pathlib import Path

import pytest

from daemon.sandboxes.beneath import read_file_beneath, write_file_beneath


def test_write_refuses_dotdot(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="beneath"):
        write_file_beneath(tmp_path, "etc/../../escape", b"x")
    assert not (tmp_path.parent / "escape").exists()


def test_write_replaces_a_planted_link_at_the_leaf(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("host")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/resolv.conf").symlink_to(victim)
    write_file_beneath(root, "etc/resolv.conf", b"sandbox")
    assert victim.read_text() == "host"
    assert (root / "etc/resolv.conf").read_text() == "sandbox"
    assert not (root / "etc/resolv.conf").is_symlink()


def test_read_never_follows(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t")
    root = tmp_path / "root"
    (root / "var").mkdir(parents=True)
    (root / "var/.iii-prepared").symlink_to(secret)
    assert read_file_beneath(root, "var/.iii-prepared") is None
    (root / "linkdir").symlink_to(tmp_path)
    assert read_file_beneath(root, "linkdir/secret") is None
    (root / "var/real").write_text("ok")
    assert read_file_beneath(root, "var/real") == b"ok"
    assert read_file_beneath(root, "missing/file") is None
