"""SPEC §4: project detection without a manifest, first match wins."""

from __future__ import annotations

import pytest

from manifests import ManifestError, load_worker
from manifests.detect import cargo_binary_name, package_json_scripts
from tests.manifests.conftest import ProjectFactory

START = '{"scripts": {"start": "node index.js"}}'


@pytest.mark.parametrize("lockfile", ["bun.lock", "bun.lockb"])
def test_detection_rule_1_package_json_with_bun_lock_is_bun(
    make_project: ProjectFactory, lockfile: str
) -> None:
    # Rule 1 comes first: bun wins over the other lockfiles and over Cargo.toml/pyproject.
    project = make_project({"package.json": START, lockfile: "", "yarn.lock": "",
                            "Cargo.toml": '[package]\nname = "x"\n', "pyproject.toml": ""})
    spec = load_worker(project)
    assert (spec.kind, spec.package_manager) == ("bun", "bun")
    assert spec.scripts.install == "bun install"
    assert spec.scripts.start == "bun run start"
    assert spec.base_image == "docker.io/oven/bun:latest"


@pytest.mark.parametrize(
    ("lockfiles", "pm"),
    [((), "npm"), (("pnpm-lock.yaml",), "pnpm"), (("yarn.lock",), "yarn"),
     (("pnpm-lock.yaml", "yarn.lock"), "pnpm"), (("package-lock.json",), "npm")],
    ids=["no-lockfile", "pnpm", "yarn", "pnpm-before-yarn", "npm-lockfile"],
)
def test_detection_rule_2_package_json_is_typescript_with_the_lockfile_package_manager(
    make_project: ProjectFactory, lockfiles: tuple[str, ...], pm: str
) -> None:
    files = {"package.json": START, "Cargo.toml": '[package]\nname = "x"\n'}
    files.update({name: "" for name in lockfiles})
    spec = load_worker(make_project(files))
    assert (spec.kind, spec.package_manager) == ("typescript", pm)
    assert spec.scripts.install == f"{pm} install"
    assert spec.base_image == "docker.io/iiidev/node:latest"


def test_detection_rule_3_cargo_toml_is_rust(make_project: ProjectFactory) -> None:
    project = make_project({"Cargo.toml": '[package]\nname = "svc"\n', "requirements.txt": ""})
    spec = load_worker(project)
    assert (spec.kind, spec.package_manager) == ("rust", None)
    assert spec.scripts.install == "cargo build --release"
    assert spec.scripts.start == "./target/release/svc"


@pytest.mark.parametrize("marker", ["pyproject.toml", "requirements.txt"])
def test_detection_rule_4_pyproject_or_requirements_is_python(
    make_project: ProjectFactory, marker: str
) -> None:
    spec = load_worker(make_project({marker: "", "main.py": ""}))
    assert (spec.kind, spec.package_manager) == ("python", None)
    assert spec.scripts.start == "python main.py"
    assert spec.base_image == "docker.io/iiidev/python:latest"


def test_detection_rule_5_nothing_detected_is_an_error(make_project: ProjectFactory) -> None:
    project = make_project({"README.md": "hi", "main.go": ""})
    with pytest.raises(ManifestError) as info:
        load_worker(project)
    assert str(info.value) == (
        f"cannot detect the project type of {project}: add iii.worker.yaml, or a package.json, "
        "pyproject.toml, requirements.txt or Cargo.toml"
    )
    assert info.value.file is None and info.value.line is None


def test_detection_ignores_directories_named_like_markers(make_project: ProjectFactory) -> None:
    project = make_project({"package.json/x": "", "requirements.txt": "", "app.py": ""})
    assert load_worker(project).kind == "python"


def test_detected_name_is_the_directory_basename(make_project: ProjectFactory) -> None:
    spec = load_worker(make_project({"requirements.txt": "", "app.py": ""}, dirname="My Service!"))
    assert spec.name == "My-Service"
    assert spec.warnings == []


def test_detected_project_defaults(make_project: ProjectFactory) -> None:
    spec = load_worker(make_project({"requirements.txt": "", "app.py": ""}))
    assert (spec.resources.memory, spec.resources.cpus) == (2048, 2)
    assert spec.env == {} and spec.config == {} and spec.entry is None
    assert spec.scripts.setup == ""


# --- the project files detection reads ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position"),
    [("{", (1, 2)), ('{"scripts": {"start": "x",}}', (1, 27)), ("\n\n  nope", (3, 3))],
    ids=["truncated", "trailing-comma", "garbage"],
)
def test_package_json_that_is_not_json_is_an_error_naming_it(
    make_project: ProjectFactory, text: str, position: tuple[int, int]
) -> None:
    with pytest.raises(ManifestError) as info:
        load_worker(make_project({"package.json": text}))
    error = info.value
    assert (error.file, error.line, error.column) == ("package.json", *position)
    assert error.message.startswith("not valid JSON")


def test_package_json_that_is_not_an_object_is_an_error(make_project: ProjectFactory) -> None:
    with pytest.raises(ManifestError, match=r"^package.json:1:1: must be a JSON object$"):
        load_worker(make_project({"package.json": "[1, 2]"}))


def test_package_json_scripts_keeps_non_empty_strings(make_project: ProjectFactory) -> None:
    project = make_project({"package.json": '{"scripts": {"start": "a", "dev": "", "x": 1}}'})
    assert package_json_scripts(project) == {"start": "a"}
    assert package_json_scripts(make_project({"package.json": '{"scripts": 3}'})) == {}
    assert package_json_scripts(make_project({})) == {}


@pytest.mark.parametrize(
    ("cargo", "binary"),
    [
        ('[package]\nname = "pkg"\n[[bin]]\nname = "first"\n[[bin]]\nname = "second"\n', "first"),
        ('[package]\nname = "pkg"\n', "pkg"),
        ('[package]\nname = "pkg"\n[[bin]]\npath = "src/x.rs"\n', "pkg"),
        ('[workspace]\nmembers = ["a"]\n', None),
        ('[package]\nname = "bad name; rm -rf /"\n', None),
    ],
    ids=["first-bin", "package-name", "bin-without-name", "workspace-only", "unsafe-name"],
)
def test_rust_binary_is_the_first_bin_name_else_the_package_name(
    make_project: ProjectFactory, cargo: str, binary: str | None
) -> None:
    assert cargo_binary_name(make_project({"Cargo.toml": cargo})) == binary


def test_cargo_toml_that_is_not_toml_is_an_error_naming_it(make_project: ProjectFactory) -> None:
    with pytest.raises(ManifestError) as info:
        load_worker(make_project({"Cargo.toml": "[package]\nname = \n"}))
    assert (info.value.file, info.value.line) == ("Cargo.toml", 2)
    assert info.value.message.startswith("not valid TOML")
