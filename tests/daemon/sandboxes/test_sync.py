from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.errors import InvalidProject
from daemon.sandboxes import sync as sync_module
from daemon.sandboxes.sync import SKIP_NAMES, SyncStats, sync_project


def tree(root: Path) -> dict[str, str]:
    """Relative path → 'dir' | 'link:<target>' | file content, without following anything."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_text()
    return out


Sync = Callable[[Path, Path], SyncStats]


@pytest.fixture(params=["stat-workspace", "with-record"])
def sync(request: pytest.FixtureRequest, tmp_path: Path) -> Sync:
    """Both ways of comparing: stat'ing the workspace, and the record of the last sync."""
    state = None if request.param == "stat-workspace" else tmp_path / "sync-state"
    return lambda project, workspace: sync_project(project, workspace, state)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    p = tmp_path / "proj"
    (p / "src/pkg").mkdir(parents=True)
    (p / "main.py").write_text("print('hi')")
    (p / "src/pkg/mod.py").write_text("x = 1")
    return p


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "sandbox/upper").mkdir(parents=True)
    return tmp_path / "sandbox/upper/workspace"


def test_first_sync_copies_files_modes_and_mtimes(sync: Sync, project: Path, workspace: Path) -> None:
    os.chmod(project / "main.py", 0o755 | stat.S_ISUID)
    os.utime(project / "main.py", ns=(1, 1_234_567_890_123_456_789))
    stats = sync(project, workspace)
    assert tree(workspace) == {"main.py": "print('hi')", "src": "dir", "src/pkg": "dir",
                               "src/pkg/mod.py": "x = 1"}
    st = os.lstat(workspace / "main.py")
    assert stat.S_IMODE(st.st_mode) == 0o755  # setuid stripped
    assert st.st_mtime_ns == 1_234_567_890_123_456_789
    assert stats.copied == 2 and stats.dirs_created == 2


def test_skip_list_at_any_depth(sync: Sync, project: Path, workspace: Path) -> None:
    for name in SKIP_NAMES:
        (project / name).mkdir()
        (project / name / "f").write_text("no")
        (project / "src/pkg" / name).mkdir()
        (project / "src/pkg" / name / "f").write_text("no")
    (project / "src/dist").write_text("a file named dist is skipped too")
    sync(project, workspace)
    names = {Path(p).name for p in tree(workspace)}
    assert not names & SKIP_NAMES


def test_symlinks_to_outside_are_copied_as_links_never_followed(sync: Sync, 
        project: Path, workspace: Path, tmp_path: Path) -> None:
    (project / "shadow").symlink_to("/etc/shadow")
    (project / "root").symlink_to("/")
    (project / "src/up").symlink_to("../../..")
    (project / "src/pkg/rel").symlink_to("../pkg/mod.py")
    sync(project, workspace)
    got = tree(workspace)
    assert got["shadow"] == "link:/etc/shadow"
    assert got["root"] == "link:/"
    assert got["src/up"] == "link:../../.."
    assert got["src/pkg/rel"] == "link:../pkg/mod.py"
    # nothing from outside the project arrived: exactly the project's entries
    assert set(got) == {"main.py", "src", "src/pkg", "src/pkg/mod.py", "shadow", "root",
                        "src/up", "src/pkg/rel"}
    assert sum(1 for _ in workspace.rglob("*")) == len(got)


def test_special_files_are_skipped(sync: Sync, project: Path, workspace: Path) -> None:
    os.mkfifo(project / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(project / "sock"))
    try:
        stats = sync(project, workspace)
    finally:
        sock.close()
    assert "fifo" not in tree(workspace) and "sock" not in tree(workspace)
    assert sorted(stats.special) == ["fifo", "sock"]


def test_planted_symlink_in_workspace_is_replaced_not_written_through(sync: Sync, 
        project: Path, workspace: Path, tmp_path: Path) -> None:
    victim = tmp_path / "host-etc"
    victim.mkdir()
    (victim / "passwd").write_text("host")
    sync(project, workspace)
    # the workload replaces /workspace/src with a link to "/etc" and main.py with a link too
    os.rename(workspace / "src", tmp_path / "old-src")
    (workspace / "src").symlink_to(victim)
    (workspace / "main.py").unlink()
    (workspace / "main.py").symlink_to(victim / "passwd")
    (project / "src/passwd").write_text("from project")
    sync(project, workspace)
    assert sorted(p.name for p in victim.iterdir()) == ["passwd"]
    assert (victim / "passwd").read_text() == "host"
    assert not (workspace / "src").is_symlink() and (workspace / "src/passwd").read_text() == (
        "from project")
    assert not (workspace / "main.py").is_symlink()


def test_planted_symlink_as_workspace_itself(sync: Sync, project: Path, workspace: Path,
                                             tmp_path: Path) -> None:
    victim = tmp_path / "host-dir"
    victim.mkdir()
    workspace.symlink_to(victim)
    sync(project, workspace)
    assert list(victim.iterdir()) == []
    assert workspace.is_dir() and not workspace.is_symlink()
    assert (workspace / "main.py").read_text() == "print('hi')"


def test_incremental_resync_edit_delete_add_and_deps_left_alone(sync: Sync, 
        project: Path, workspace: Path) -> None:
    (project / "gone.py").write_text("bye")
    (project / "olddir/sub").mkdir(parents=True)
    (project / "olddir/sub/f").write_text("f")
    sync(project, workspace)
    # deps installed inside /workspace by install, at top level and nested
    (workspace / "node_modules/left-pad").mkdir(parents=True)
    (workspace / "node_modules/left-pad/index.js").write_text("module")
    (workspace / "src/.venv").mkdir()
    (workspace / "src/.venv/pyvenv.cfg").write_text("venv")

    (project / "main.py").write_text("print('yo')")  # same size, new content + mtime
    os.utime(project / "main.py", ns=(0, os.lstat(workspace / "main.py").st_mtime_ns + 10**9))
    (project / "gone.py").unlink()
    import shutil
    shutil.rmtree(project / "olddir")
    (project / "src/new.py").write_text("new")
    stats = sync(project, workspace)

    assert tree(workspace) == {
        "main.py": "print('yo')", "src": "dir", "src/pkg": "dir", "src/pkg/mod.py": "x = 1",
        "src/new.py": "new", "node_modules": "dir", "node_modules/left-pad": "dir",
        "node_modules/left-pad/index.js": "module", "src/.venv": "dir",
        "src/.venv/pyvenv.cfg": "venv"}
    assert (stats.copied, stats.deleted, stats.unchanged) == (2, 2, 1)


def test_unchanged_resync_copies_nothing(sync: Sync, project: Path, workspace: Path) -> None:
    sync(project, workspace)
    stats = sync(project, workspace)
    assert (stats.copied, stats.links, stats.deleted, stats.dirs_created) == (0, 0, 0, 0)
    assert stats.unchanged == 2


def test_type_changes_file_dir_link(sync: Sync, project: Path, workspace: Path) -> None:
    sync(project, workspace)
    (project / "main.py").unlink()
    (project / "main.py").mkdir()
    (project / "main.py/inner").write_text("i")
    import shutil
    shutil.rmtree(project / "src")
    (project / "src").symlink_to("elsewhere")
    sync(project, workspace)
    assert tree(workspace) == {"main.py": "dir", "main.py/inner": "i", "src": "link:elsewhere"}


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a whiteout needs root")
def test_overlay_whiteout_in_upper_is_replaced(sync: Sync, project: Path, workspace: Path) -> None:
    sync(project, workspace)
    (workspace / "main.py").unlink()
    os.mknod(workspace / "main.py", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    sync(project, workspace)
    assert (workspace / "main.py").read_text() == "print('hi')"


def test_missing_project_is_a_clear_error(sync: Sync, tmp_path: Path, workspace: Path) -> None:
    with pytest.raises(InvalidProject, match="cannot read project directory"):
        sync(tmp_path / "nope", workspace)


def test_record_catches_type_changes_made_in_the_sandbox(
        sync: Sync, project: Path, workspace: Path) -> None:
    sync(project, workspace)
    (workspace / "main.py").unlink()  # the workload removed a file
    (workspace / "src/pkg/mod.py").unlink()
    (workspace / "src/pkg/mod.py").symlink_to("/etc/passwd")  # or replaced it by a link
    stats = sync(project, workspace)
    assert stats.copied == 2
    assert tree(workspace)["src/pkg/mod.py"] == "x = 1"
    assert sync(project, workspace).copied == 0


def test_half_done_sync_drops_the_record(project: Path, workspace: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "sync-state"
    sync_project(project, workspace, state)
    assert state.is_file()
    (project / "main.py").write_text("changed!!!!")

    def failing_copy(*_a: object) -> None:  # an I/O error in the middle of a copy
        raise OSError(errno.EIO, "disk on fire")
    monkeypatch.setattr(sync_module, "_copy_bytes", failing_copy)
    with pytest.raises(OSError, match="disk on fire"):
        sync_project(project, workspace, state)
    assert not state.exists()
    monkeypatch.undo()
    sync_project(project, workspace, state)
    assert (workspace / "main.py").read_text() == "changed!!!!"


def test_project_containing_the_sandbox_does_not_copy_into_itself(
        sync: Sync, tmp_path: Path) -> None:
    project = tmp_path / "home"
    (project / ".iii/managed/w/upper").mkdir(parents=True)
    (project / "app.py").write_text("a")
    workspace = project / ".iii/managed/w/upper/workspace"
    sync(project, workspace)
    sync(project, workspace)
    assert (workspace / "app.py").read_text() == "a"
    assert not (workspace / ".iii/managed/w/upper/workspace").exists()
