"""load_worker end to end: the seed's manifests, upstream-template shapes, project paths."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from manifests import ManifestError, Resources, Scripts, WorkerSpec, load_worker
from manifests.fields import LANGUAGE_DEPRECATED
from tests.manifests.conftest import ProjectFactory

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_seed_example_typescript_npm_entry_infers_npm_install_and_npx_tsx(
    make_project: ProjectFactory,
) -> None:
    manifest = "name: my-worker\nruntime:\n  kind: typescript\n  package_manager: npm\n  entry: src/index.ts\n"
    spec = load_worker(make_project({"src/index.ts": ""}, manifest=manifest))
    assert spec.scripts == Scripts(setup="", install="npm install", start="npx tsx src/index.ts")


def test_seed_example_bun_entry_infers_bun_install_and_bun_run(make_project: ProjectFactory) -> None:
    manifest = "name: my-worker\nruntime:\n  kind: bun\n  entry: src/index.ts\n"
    spec = load_worker(make_project({"src/index.ts": ""}, manifest=manifest))
    assert spec.scripts == Scripts(setup="", install="bun install", start="bun run src/index.ts")
    assert spec.package_manager == "bun"
    assert spec.base_image == "docker.io/oven/bun:latest"


SEED_TYPESCRIPT = """\
name: my-worker
runtime:
  kind: typescript
  package_manager: npm
  entry: src/index.ts
resources:
  memory: 2048
  cpus: 2
scripts:
  setup: "apt-get update && apt-get install -y build-essential"
  install: "npm install"
  start: "npx tsx src/index.ts"
env:
  MY_API_KEY: sk-abc123
  LOG_LEVEL: debug
"""


def test_seed_typescript_manifest_resolves_fully(make_project: ProjectFactory) -> None:
    project = make_project({"src/index.ts": ""}, manifest=SEED_TYPESCRIPT)
    spec = load_worker(project)
    assert spec == WorkerSpec(
        name="my-worker",
        kind="typescript",
        package_manager="npm",
        entry="src/index.ts",
        base_image="docker.io/iiidev/node:latest",
        scripts=Scripts(setup="apt-get update && apt-get install -y build-essential",
                        install="npm install", start="npx tsx src/index.ts"),
        env={"MY_API_KEY": "sk-abc123", "LOG_LEVEL": "debug"},
        resources=Resources(memory=2048, cpus=2),
        config={},
        warnings=[],
        project_dir=str(project.resolve()),
    )
    assert msgspec.json.decode(msgspec.json.encode(spec), type=WorkerSpec) == spec


SEED_PYTHON = """\
name: my-worker
runtime:
  kind: python
  entry: worker.py
scripts:
  install: "pip install -r requirements.txt"
  start: "python worker.py"
"""
SEED_RUST = """\
name: my-worker
runtime:
  kind: rust
scripts:
  install: "cargo build --release"
  start: "./target/release/my-worker"
"""
SEED_CUSTOM_IMAGE = """\
name: my-worker
runtime:
  kind: bun
  base_image: oven/bun:1
  entry: src/index.ts
"""


@pytest.mark.parametrize(
    ("manifest", "files", "kind", "start"),
    [
        (SEED_PYTHON, {"worker.py": "", "requirements.txt": ""}, "python", "python worker.py"),
        (SEED_RUST, {"Cargo.toml": '[package]\nname = "my-worker"\n'}, "rust",
         "./target/release/my-worker"),
        (SEED_CUSTOM_IMAGE, {"src/index.ts": ""}, "bun", "bun run src/index.ts"),
    ],
    ids=["python-tab", "rust-tab", "custom-base-image"],
)
def test_seed_manifests_resolve(
    make_project: ProjectFactory, manifest: str, files: dict[str, str], kind: str, start: str
) -> None:
    spec = load_worker(make_project(files, manifest=manifest))
    assert (spec.kind, spec.scripts.start, spec.warnings) == (kind, start, [])


# Shaped like the upstream iii worker templates: legacy `runtime.language`, `package_manager: pip`
# (not one of SPEC §3's package managers: accepted and ignored for python, with a warning) and
# top-level keys we accept silently.
UPSTREAM_PYTHON = """\
iii: v1
name: py-template
version: 0.1.0
description: A Python worker template
deploy: sandbox
runtime:
  language: python
  package_manager: pip
  entry: src/main.py
"""

UPSTREAM_TYPESCRIPT = """\
iii: v1
name: ts-template
version: "1.0.0"
description: TypeScript worker
deploy:
  type: sandbox
runtime:
  language: typescript
  package_manager: npm
  entry: src/index.ts
"""


def test_manifest_shaped_like_upstream_python_template(make_project: ProjectFactory) -> None:
    project = make_project({"src/main.py": "", "requirements.txt": "iii-sdk\n"}, manifest=UPSTREAM_PYTHON)
    spec = load_worker(project)
    assert (spec.name, spec.kind, spec.package_manager, spec.entry) == (
        "py-template", "python", None, "src/main.py")
    assert spec.scripts == Scripts(setup="", install="pip install -r requirements.txt",
                                   start="python src/main.py")
    assert spec.warnings == [
        LANGUAGE_DEPRECATED,
        ("runtime.package_manager 'pip' is ignored for kind python (it applies to typescript and "
         "javascript only)"),
    ]


def test_manifest_shaped_like_upstream_typescript_template(make_project: ProjectFactory) -> None:
    spec = load_worker(make_project({"src/index.ts": ""}, manifest=UPSTREAM_TYPESCRIPT))
    assert (spec.kind, spec.package_manager) == ("typescript", "npm")
    assert spec.scripts.start == "npx tsx src/index.ts"
    assert spec.warnings == [LANGUAGE_DEPRECATED]


def test_manifest_without_kind_gets_the_detected_kind(make_project: ProjectFactory) -> None:
    spec = load_worker(make_project({"Cargo.toml": '[package]\nname = "svc"\n'}, manifest="name: w\n"))
    assert spec.kind == "rust"


def test_manifest_without_kind_or_detection_is_typescript(make_project: ProjectFactory) -> None:
    spec = load_worker(make_project({"a.ts": ""}, manifest="name: w\nruntime:\n  entry: a.ts\n"))
    assert (spec.kind, spec.package_manager) == ("typescript", "npm")


@pytest.mark.parametrize(
    ("lockfile", "pm"), [("yarn.lock", "yarn"), ("pnpm-lock.yaml", "pnpm"), ("bun.lock", "bun"), (None, "npm")],
    ids=["yarn", "pnpm", "bun", "none"],
)
def test_manifest_without_package_manager_gets_the_detected_one(
    make_project: ProjectFactory, lockfile: str | None, pm: str
) -> None:
    files = {"package.json": "{}", "a.ts": ""} | ({lockfile: ""} if lockfile else {})
    spec = load_worker(make_project(files, manifest="name: w\nruntime:\n  kind: typescript\n  entry: a.ts\n"))
    assert spec.package_manager == pm


def test_manifest_with_only_a_name_on_a_detected_project(make_project: ProjectFactory) -> None:
    spec = load_worker(make_project({"requirements.txt": "", "worker.py": ""}, manifest="name: w\n"))
    assert (spec.kind, spec.scripts.start, spec.scripts.install) == (
        "python", "python worker.py", "pip install -r requirements.txt")


def test_name_argument_overrides_the_manifest_and_the_directory(make_project: ProjectFactory) -> None:
    project = make_project({"requirements.txt": "", "app.py": ""}, manifest="name: w\n")
    assert load_worker(project, name="other").name == "other"
    detected = make_project({"requirements.txt": "", "app.py": ""})
    assert load_worker(detected, name="given").name == "given"
    nameless = make_project({"requirements.txt": "", "app.py": ""}, manifest="runtime: {kind: python}\n")
    assert load_worker(nameless, name="given").name == "given"
    with pytest.raises(ManifestError, match=r"^worker name must be 1-63 characters"):
        load_worker(project, name="bad name")


def test_project_dir_is_absolute(make_project: ProjectFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project({"requirements.txt": "", "app.py": ""})
    monkeypatch.chdir(project.parent)
    spec = load_worker(Path(project.name))
    assert spec.project_dir == str(project.resolve())


def test_missing_project_directory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_worker(tmp_path / "nope")
    assert str(info.value) == f"project directory {tmp_path / 'nope'} does not exist"


def test_project_path_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(ManifestError) as info:
        load_worker(file)
    assert str(info.value) == f"{file} is not a directory; pass a worker project directory"
    with pytest.raises(ManifestError, match="does not exist"):
        load_worker(file / "below")


def test_manifest_symlink_inside_the_project_is_fine(make_project: ProjectFactory) -> None:
    project = make_project({"conf/worker.yaml": "name: linked\nruntime: {kind: python}\n", "app.py": ""})
    (project / "iii.worker.yaml").symlink_to("conf/worker.yaml")
    assert load_worker(project).name == "linked"


def test_manifest_symlink_pointing_outside_the_project_is_an_error(
    make_project: ProjectFactory, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text("name: stolen\nruntime: {kind: python}\n")
    project = make_project({"app.py": ""})
    (project / "iii.worker.yaml").symlink_to(outside)
    with pytest.raises(ManifestError) as info:
        load_worker(project)
    assert info.value.file == "iii.worker.yaml"
    assert "is a symlink pointing outside the project" in info.value.message


def test_broken_manifest_symlink_is_an_error(make_project: ProjectFactory) -> None:
    project = make_project({"app.py": ""})
    (project / "iii.worker.yaml").symlink_to("missing.yaml")
    with pytest.raises(ManifestError, match=r"^iii.worker.yaml: is a broken symlink$"):
        load_worker(project)


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_manifest_that_is_not_a_regular_file_is_an_error(make_project: ProjectFactory, kind: str) -> None:
    project = make_project({"app.py": ""})
    if kind == "directory":
        (project / "iii.worker.yaml").mkdir()
    else:
        os.mkfifo(project / "iii.worker.yaml")
    with pytest.raises(ManifestError, match=r"^iii.worker.yaml: is not a regular file$"):
        load_worker(project)


@pytest.mark.parametrize("example", ["python-worker", "ts-worker", "rust-worker"])
def test_bundled_examples_validate_cleanly(example: str) -> None:
    spec = load_worker(EXAMPLES / example)
    assert spec.name == example
    assert spec.warnings == []
    assert spec.scripts.start
