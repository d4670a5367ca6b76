from __future__ import annotations

from pathlib import Path

from daemon.sandboxes.fingerprint import (
    compute_fingerprint,
    decode_marker,
    encode_marker,
    explain_change,
)


def test_same_inputs_same_fingerprint(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("iii-sdk\n")
    a = compute_fingerprint(tmp_path, "", "pip install -r requirements.txt")
    b = compute_fingerprint(tmp_path, "", "pip install -r requirements.txt")
    assert a.digest == b.digest


def test_dependency_files_covered(tmp_path: Path) -> None:
    names = ["package.json", "package-lock.json", "yarn.lock", "pnpm-lock.yaml", "bun.lock",
             "bun.lockb", "requirements.txt", "requirements-dev.txt", "pyproject.toml",
             "Cargo.toml", "Cargo.lock"]
    for n in names:
        (tmp_path / n).write_text(n)
    (tmp_path / "main.py").write_text("print()")
    fp = compute_fingerprint(tmp_path, "", "")
    assert sorted(fp.files) == sorted(names)


def test_change_is_explained_by_file(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("a\n")
    old = compute_fingerprint(tmp_path, "s", "i")
    (tmp_path / "requirements.txt").write_text("b\n")
    (tmp_path / "pyproject.toml").write_text("")
    new = compute_fingerprint(tmp_path, "s", "i2")
    assert old.digest != new.digest
    assert explain_change(old, new) == ("pyproject.toml added, requirements.txt changed, "
                                        "install script changed")


def test_source_edits_do_not_change_fingerprint(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("a")
    old = compute_fingerprint(tmp_path, "", "x")
    (tmp_path / "main.py").write_text("b")
    assert compute_fingerprint(tmp_path, "", "x").digest == old.digest


def test_symlinked_dependency_file_is_not_read_through(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("one")
    proj = tmp_path / "p"
    proj.mkdir()
    (proj / "package.json").symlink_to(secret)
    old = compute_fingerprint(proj, "", "")
    secret.write_text("two")
    assert compute_fingerprint(proj, "", "").digest == old.digest


def test_marker_roundtrip_and_garbage(tmp_path: Path) -> None:
    fp = compute_fingerprint(tmp_path, "a", "b")
    marker = decode_marker(encode_marker(fp))
    assert marker is not None and marker.fingerprint == fp.digest and marker.parts == fp
    assert decode_marker(b"not json") is None
    assert decode_marker(None) is None
