"""``worker.add`` and friends on bad input, through the real CLI and daemon: one clear error
each, exit 1, and nothing changed (config.yaml byte for byte, no sandbox left registered)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.registry import free_port

CONFIG = "# my engine config\nport: 49134\nworkers:\n  - name: keep   # a comment\n"


@pytest.fixture
def daemon(daemon_factory, iii_home: Path):
    (iii_home / "config.yaml").write_text(CONFIG)
    return daemon_factory()


def one_error(result, *needles: str) -> str:
    assert result.returncode == 1, result
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return lines[0]


def unchanged(home: Path) -> None:
    assert (home / "config.yaml").read_text() == CONFIG


def test_add_missing_path(daemon, iii_home: Path, tmp_path: Path) -> None:
    one_error(daemon.iii("worker", "add", str(tmp_path / "nope")), "nope")
    unchanged(iii_home)


def test_add_file_instead_of_directory(daemon, iii_home: Path, tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    one_error(daemon.iii("worker", "add", str(target)), "file.txt")
    unchanged(iii_home)


def test_add_undetectable_project(daemon, iii_home: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    one_error(daemon.iii("worker", "add", str(tmp_path / "empty")),
              "cannot detect the project type")
    unchanged(iii_home)


def test_add_invalid_manifest_names_file_line_column(daemon, iii_home: Path,
                                                     tmp_path: Path) -> None:
    project = tmp_path / "bad"
    project.mkdir()
    (project / "iii.worker.yaml").write_text("name: bad\nresources:\n  memory: lots\n")
    one_error(daemon.iii("worker", "add", str(project)), "iii.worker.yaml:3:", "memory")
    unchanged(iii_home)


def test_add_existing_name_without_force(daemon, iii_home: Path) -> None:
    one_error(daemon.iii("worker", "add", "keep"), "already exists", "--force")
    unchanged(iii_home)


def test_add_unreachable_registry(daemon, iii_home: Path, tmp_path: Path) -> None:
    project = tmp_path / "w"
    project.mkdir()
    (project / "requirements.txt").write_text("")
    (project / "iii.worker.yaml").write_text(
        f"name: w\nruntime:\n  kind: python\n  base_image: 127.0.0.1:{free_port()}/x/y:1\n"
        "scripts:\n  start: 'sleep 1'\n")
    one_error(daemon.iii("worker", "add", str(project)), "127.0.0.1")
    unchanged(iii_home)
    assert "w" not in [w["name"] for w in daemon.json("worker", "list")["workers"]]


def test_stop_of_config_worker_is_a_noop_and_restart_invalid_state(daemon,
                                                                    iii_home: Path) -> None:
    # SPEC §12: the upstream CLI spawns `iii-worker stop <config entry>`; it must succeed.
    stopped = daemon.iii("worker", "stop", "keep")
    assert stopped.returncode == 0 and stopped.stderr.startswith("note: "), stopped.stderr
    unchanged(iii_home)
    one_error(daemon.iii("worker", "restart", "keep"), "config worker")
    unchanged(iii_home)


def test_unknown_worker_is_not_found(daemon, iii_home: Path) -> None:
    one_error(daemon.iii("worker", "remove", "ghost"), "ghost")
    unchanged(iii_home)


def test_config_worker_add_and_remove_keep_comments(daemon, iii_home: Path) -> None:
    added = daemon.json("worker", "add", "iii-http")
    assert added["worker"]["type"] == "config" and added["started"] is False
    text = (iii_home / "config.yaml").read_text()
    assert "# my engine config" in text and "# a comment" in text and "- name: iii-http" in text
    assert [w["type"] for w in daemon.json("worker", "list")["workers"]] == ["config", "config"]
    assert daemon.iii("worker", "remove", "iii-http").returncode == 0
    unchanged(iii_home)
