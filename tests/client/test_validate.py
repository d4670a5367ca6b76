"""``iii worker validate PATH [--json]`` through the real console script (no daemon needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JSON_KEYS = ["name", "kind", "package_manager", "entry", "base_image", "scripts", "env",
             "resources", "config", "warnings"]


def iii(*args: str, cwd: Path | None = None, script: str = "iii") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    env["III_NO_AUTOSTART"] = "1"
    return subprocess.run([str(BIN / script), *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=60, check=False)


def write_project(root: Path, files: dict[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def test_human_output_shows_the_resolved_spec() -> None:
    result = iii("worker", "validate", str(EXAMPLES / "python-worker"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert "name:            python-worker" in lines
    assert "kind:            python" in lines
    assert "base image:      docker.io/iiidev/python:latest" in lines
    assert "  install: pip install -r requirements.txt" in lines
    assert "  start:   python worker.py" in lines
    assert "  GREETING=Hello" in lines


def test_json_output_has_exactly_the_documented_shape() -> None:
    result = iii("worker", "validate", str(EXAMPLES / "ts-worker"), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert list(document) == JSON_KEYS
    assert document == {
        "name": "ts-worker",
        "kind": "typescript",
        "package_manager": "npm",
        "entry": "src/index.ts",
        "base_image": "docker.io/iiidev/node:latest",
        "scripts": {"setup": "", "install": "npm install", "start": "npx tsx src/index.ts"},
        "env": {"GREETING": "Hello"},
        "resources": {"memory": 1024, "cpus": 1},
        "config": {},
        "warnings": [],
    }


def test_json_output_has_nulls_where_not_applicable() -> None:
    result = iii("worker", "validate", str(EXAMPLES / "rust-worker"), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["package_manager"], document["entry"]) == (None, None)
    assert list(document["scripts"]) == ["setup", "install", "start"]
    assert list(document["resources"]) == ["memory", "cpus"]


def test_warnings_are_warning_lines_on_stderr_and_in_json(tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", {
        "worker.py": "",
        "iii.worker.yaml": "name: w\nruntime:\n  language: python\nresouces: {}\nconfig: {a: {b: 1}}\n",
    })
    result = iii("worker", "validate", str(project))
    assert result.returncode == 0
    assert sorted(result.stderr.splitlines()) == [
        "warning: runtime.language is deprecated; rename it to runtime.kind",
        "warning: unknown key 'resouces' at iii.worker.yaml:4:1 is ignored (did you mean 'resources'?)",
    ]
    assert '  a: {"b":1}' in result.stdout.splitlines()
    document = json.loads(iii("worker", "validate", str(project), "--json").stdout)
    assert "runtime.language is deprecated; rename it to runtime.kind" in document["warnings"]
    assert document["config"] == {"a": {"b": 1}}


def test_error_is_one_line_with_file_line_column_and_exit_1(tmp_path: Path) -> None:
    write_project(tmp_path / "p", {
        "worker.py": "",
        "iii.worker.yaml": "name: w\nruntime: {kind: python}\nresources: {cpus: 1,\nmemory: lots}\n",
    })
    for args in ((), ("--json",)):
        result = iii("worker", "validate", "p", *args, cwd=tmp_path)
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr == (
            "error: p/iii.worker.yaml:4:9: resources.memory must be a positive integer (MiB), got 'lots'\n"
        )


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, "error: cannot detect the project type of"),
        ({"iii.worker.yaml": b"\x00\xff\xfe junk"}, "error: p/iii.worker.yaml:1:2: not valid UTF-8"),
        ({"iii.worker.yaml": "name: a\nname: b\n"}, "error: p/iii.worker.yaml:2:1: duplicate key 'name'"),
        ({"iii.worker.yaml": "- a\n"}, "error: p/iii.worker.yaml:1:1: the manifest must be a mapping"),
        ({"iii.worker.yaml": "name: w\n" + "#" * 70000 + "\n"}, "error: p/iii.worker.yaml: the file is"),
        ({"package.json": "{oops"}, "error: p/package.json:1:2: not valid JSON"),
        ({"requirements.txt": ""}, "error: cannot infer the start command of this python project"),
    ],
    ids=["undetectable", "binary-junk", "duplicate-key", "not-a-mapping", "too-big",
         "bad-package-json", "nothing-to-start"],
)
def test_bad_projects_are_one_error_line(
    tmp_path: Path, files: dict[str, str | bytes], expected: str
) -> None:
    write_project(tmp_path / "p", files)
    result = iii("worker", "validate", "p", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(expected), result.stderr
    assert "Traceback" not in result.stderr


def test_symlinked_manifest_outside_the_project_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.yaml").write_text("name: w\nruntime: {kind: python}\n")
    project = write_project(tmp_path / "p", {"worker.py": ""})
    (project / "iii.worker.yaml").symlink_to(tmp_path / "elsewhere.yaml")
    result = iii("worker", "validate", "p", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: p/iii.worker.yaml: is a symlink pointing outside the project")


@pytest.mark.parametrize("target", ["missing", "file.txt"], ids=["missing", "not-a-directory"])
def test_bad_project_path_is_one_error_line(tmp_path: Path, target: str) -> None:
    (tmp_path / "file.txt").write_text("x")
    result = iii("worker", "validate", target, cwd=tmp_path)
    assert result.returncode == 1
    expected = ("error: project directory missing does not exist\n" if target == "missing"
                else "error: file.txt is not a directory; pass a worker project directory\n")
    assert result.stderr == expected


def test_iii_worker_script_has_validate_too() -> None:
    result = iii("validate", str(EXAMPLES / "rust-worker"), "--json", script="iii-worker")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["scripts"]["start"] == "./target/release/rust-worker"


def test_missing_path_is_a_usage_error() -> None:
    result = iii("worker", "validate")
    assert result.returncode == 2


@pytest.mark.slow
@pytest.mark.timeout(900)  # two workers' installs; a fresh machine also builds two images
def test_demo_runs_the_typescript_and_python_examples_through_the_engine() -> None:
    """``make demo``: validates every example, then adds, invokes and removes the TypeScript and
    the Python worker."""
    from tests.support.images import NODE, PYTHON, image_cached

    if os.geteuid() != 0 and not (image_cached(NODE) and image_cached(PYTHON)):
        pytest.skip("the demo builds its stand-in images with debootstrap, which needs root")
    repo = EXAMPLES.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    result = subprocess.run([sys.executable, "-m", "examples.demo"], capture_output=True, text=True,
                            cwd=repo, timeout=850, check=False, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for example in ("ts-worker", "js-yarn-worker", "js-pnpm-worker", "bun-worker", "python-worker",
                    "rust-worker"):
        assert f"name:            {example}" in result.stdout
    for worker in ("ts-worker", "python-worker"):
        assert f"{worker}: examples::greet({{'name': 'demo'}}) -> {{'message': 'Hello, demo!'}}" \
            in result.stdout
        assert f"removed worker '{worker}'" in result.stdout
