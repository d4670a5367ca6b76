from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.errors import InvalidArgument
from daemon.sandboxes.layout import RootMode, SandboxLayout, validate_sandbox_id


@pytest.mark.parametrize("name", ["calc", "a", "my-worker_1.2", "A" * 63],
                         ids=["plain", "one-char", "punct", "max-len"])
def test_valid_names_pass(name: str) -> None:
    assert validate_sandbox_id(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../etc", "a/b", ".hidden", "-x", "a\0b",
                                  "A" * 64, "sp ace", None, 3],
                         ids=["empty", "dot", "dotdot", "traversal", "slash", "dotfile", "dash",
                              "nul", "too-long", "space", "none", "int"])
def test_invalid_names_are_refused_before_any_path(name: object, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="invalid sandbox name"):
        SandboxLayout(tmp_path, name)  # type: ignore[arg-type]
    assert not (tmp_path / "managed").exists()


def test_paths_live_under_managed_name(tmp_path: Path) -> None:
    lay = SandboxLayout(tmp_path, "calc")
    base = tmp_path / "managed" / "calc"
    assert lay.dir == base
    assert (lay.upper, lay.work, lay.merged, lay.rootfs) == (
        base / "upper", base / "work", base / "merged", base / "rootfs")
    assert lay.worker_log == base / "logs/worker.log"
    assert (lay.pid_file, lay.bootstrap, lay.exit_file, lay.lock_file) == (
        base / "launcher.pid", base / "bootstrap.json", base / "exit.json", base / ".lock")
    assert lay.marker == base / "upper/var/.iii-prepared"
    assert lay.workspace == base / "upper/workspace"


def test_copy_mode_moves_marker_and_workspace_to_rootfs(tmp_path: Path) -> None:
    lay = SandboxLayout(tmp_path, "calc")
    lay.dir.mkdir(parents=True)
    (lay.dir / "root-mode").write_text(RootMode.COPY.value)
    assert lay.mode() is RootMode.COPY
    assert lay.marker == lay.dir / "rootfs/var/.iii-prepared"
    assert lay.workspace == lay.dir / "rootfs/workspace"


def test_remove_renames_to_dot_dir_then_frees_bytes(tmp_path: Path) -> None:
    lay = SandboxLayout(tmp_path, "calc")
    (lay.upper / "workspace").mkdir(parents=True)
    (lay.upper / "workspace/big").write_bytes(os.urandom(256 * 1024))
    # overlay leaves a mode-000 work/work dir behind; removal must cope.
    (lay.work / "work").mkdir(parents=True)
    os.chmod(lay.work / "work", 0)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    (lay.upper / "escape").symlink_to(outside)
    freed = lay.remove()
    assert freed >= 256 * 1024
    assert not lay.dir.exists()
    assert [p.name for p in lay.managed.iterdir()] == []
    assert (outside / "keep").read_text() == "x"  # a symlink inside is never followed
    assert lay.remove() == 0
