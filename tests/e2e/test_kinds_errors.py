"""Bad input for the non-Python kinds, through the real CLI, daemon, images and toolchains: one
clear error each (naming the file, the command, the image, or carrying the tool's own last
lines), and config.yaml left as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.e2e.test_kinds import EXAMPLES, FIRST_START_S, IMAGES
from tests.support.fixtures import push_built_image, push_python_image
from tests.support.registry import RegistryServer
from tests.support.wait import wait_until

# The first test of a fresh machine also builds the images (minutes), a loaded one installs slowly.
pytestmark = pytest.mark.timeout(900)
CONFIG = "# my engine config\nworkers:\n  - name: keep   # a comment\n"


@pytest.fixture(scope="module")
def mirror(registry: RegistryServer) -> str:
    """The node and rust images (the bun-less case uses the python one as its base_image)."""
    for key in ("node", "rust"):
        recipe, repo, tag = IMAGES[key]
        push_built_image(registry, recipe, repo, tag)
    push_python_image(registry, "iiidev/python", "latest")
    return registry.host


@pytest.fixture
def daemon(daemon_factory, engine_factory, iii_home: Path, mirror: str):
    (iii_home / "config.yaml").write_text(CONFIG)
    return daemon_factory(III_URL=engine_factory().url, III_REGISTRY_MIRROR=mirror)


def add_fails(daemon, project: Path, *needles: str) -> str:
    result = daemon.iii("worker", "add", str(project), timeout=FIRST_START_S)
    assert result.returncode == 1, result
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return first


def ts_project(tmp_path: Path) -> Path:
    project = tmp_path / "ts-worker"
    shutil.copytree(EXAMPLES / "ts-worker", project)
    return project


def test_package_json_syntax_error_names_file_line_column(daemon, iii_home: Path,
                                                          tmp_path: Path) -> None:
    """Without a manifest, detection reads package.json and says where it is broken; with one
    (nothing to infer from package.json), npm's own report of the same place is the error."""
    project = ts_project(tmp_path)
    (project / "package.json").write_text('{\n  "name": "ts-worker",\n  "version": 1,,\n}\n')
    first = add_fails(daemon, project, "package.json", "EJSONPARSE", "line 3 column 16")
    assert "install script failed with exit code 1" in first
    (project / "iii.worker.yaml").unlink()
    first = add_fails(daemon, project)
    assert "package.json:3:" in first and "not valid JSON" in first, first
    assert (iii_home / "config.yaml").read_text() == CONFIG


def test_npm_install_of_a_missing_package_shows_npms_own_lines(daemon, iii_home: Path,
                                                              tmp_path: Path) -> None:
    project = ts_project(tmp_path)
    package = json.loads((project / "package.json").read_text())
    package["dependencies"]["iii-no-such-package-xyzzy"] = "^1.0.0"
    (project / "package.json").write_text(json.dumps(package))
    first = add_fails(daemon, project, "404", "iii-no-such-package-xyzzy")
    assert "install script failed with exit code 1" in first
    assert (iii_home / "config.yaml").read_text() == CONFIG


def test_typescript_syntax_error_backs_off_with_tsxs_message(daemon, iii_home: Path,
                                                             tmp_path: Path) -> None:
    project = ts_project(tmp_path)
    entry = project / "src/index.ts"
    entry.write_text(entry.read_text() + "\nconst broken: number = (;\n")
    added = daemon.json("worker", "add", str(project))
    assert added["started"] is True  # install succeeded; the entry fails when it runs
    wait_until(lambda: daemon.worker("ts-worker")["last_exit_code"] == 1, FIRST_START_S,
               "the entry to fail")
    worker = daemon.worker("ts-worker")
    assert worker["status"] in ("backoff", "running", "starting"), worker
    logs = daemon.iii("worker", "logs", "ts-worker").stdout
    assert "src/index.ts" in logs and "ERROR" in logs, logs[-2000:]  # esbuild's report via tsx
    shown = daemon.iii("worker", "inspect", "ts-worker")
    assert shown.returncode == 0 and "1" in shown.stdout


def test_bun_lock_without_bun_in_the_base_image_names_command_and_image(
        daemon, iii_home: Path, tmp_path: Path) -> None:
    project = tmp_path / "bun-worker"
    shutil.copytree(EXAMPLES / "bun-worker", project)
    (project / "iii.worker.yaml").write_text(
        "name: bun-worker\nruntime:\n  base_image: iiidev/python:latest\n")
    first = add_fails(daemon, project)
    assert "'bun' is not installed in image docker.io/iiidev/python:latest" in first, first
    assert (iii_home / "config.yaml").read_text() == CONFIG


def test_failing_cargo_build_shows_the_compiler_output(daemon, iii_home: Path,
                                                       tmp_path: Path) -> None:
    project = tmp_path / "rust-worker"
    shutil.copytree(EXAMPLES / "rust-worker", project)
    (project / "src/main.rs").write_text('fn main() {\n    let x: u32 = "not a number";\n}\n')
    first = add_fails(daemon, project, "error[E0308]: mismatched types", "src/main.rs:2")
    assert "install script failed with exit code 101" in first
    assert (iii_home / "config.yaml").read_text() == CONFIG
