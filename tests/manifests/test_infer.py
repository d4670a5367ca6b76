"""SPEC §4: script inference — each missing script on its own, ``""`` means skip."""

from __future__ import annotations

import pytest

from manifests import ManifestError, load_worker
from tests.manifests.conftest import ProjectFactory

CARGO = '[package]\nname = "svc"\n'


def runtime(kind: str, pm: str | None = None, entry: str | None = None) -> str:
    lines = [f"  kind: {kind}"]
    if pm:
        lines.append(f"  package_manager: {pm}")
    if entry:
        lines.append(f"  entry: {entry}")
    return "name: w\nruntime:\n" + "\n".join(lines) + "\n"


def test_inferred_setup_is_empty(make_project: ProjectFactory) -> None:
    for kind in ("typescript", "bun", "python", "rust"):
        files = {"package.json": '{"scripts": {"start": "x"}}', "Cargo.toml": CARGO, "main.py": ""}
        assert load_worker(make_project(files, manifest=runtime(kind))).scripts.setup == ""


@pytest.mark.parametrize(
    ("kind", "pm", "files", "install"),
    [
        ("typescript", "npm", {}, "npm install"),
        ("typescript", "yarn", {}, "yarn install"),
        ("typescript", "pnpm", {}, "pnpm install"),
        ("typescript", "bun", {}, "bun install"),
        ("javascript", "npm", {}, "npm install"),
        ("javascript", "bun", {}, "bun install"),
        ("bun", None, {}, "bun install"),
        ("python", None, {"requirements.txt": "", "pyproject.toml": ""}, "pip install -r requirements.txt"),
        ("python", None, {"pyproject.toml": ""}, "pip install ."),
        ("python", None, {}, ""),
        ("rust", None, {"Cargo.toml": CARGO}, "cargo build --release"),
    ],
    ids=["ts-npm", "ts-yarn", "ts-pnpm", "ts-bun", "js-npm", "js-bun", "bun", "python-requirements",
         "python-pyproject", "python-nothing", "rust"],
)
def test_inferred_install_per_package_manager_and_kind(
    make_project: ProjectFactory, kind: str, pm: str | None, files: dict[str, str], install: str
) -> None:
    project = make_project({**files, "main.py": "", "e.ts": ""},
                           manifest=runtime(kind, pm, None if kind in ("python", "rust") else "e.ts"))
    assert load_worker(project).scripts.install == install


@pytest.mark.parametrize(
    ("kind", "pm", "start"),
    [
        ("typescript", "npm", "npx tsx src/index.ts"),
        ("typescript", "pnpm", "pnpm exec tsx src/index.ts"),
        ("typescript", "yarn", "yarn exec tsx src/index.ts"),
        ("typescript", "bun", "bun run src/index.ts"),
        ("javascript", "npm", "node src/index.ts"),
        ("javascript", "yarn", "node src/index.ts"),
        ("javascript", "bun", "bun run src/index.ts"),
        ("bun", None, "bun run src/index.ts"),
        ("python", None, "python src/index.ts"),
        ("rust", None, "./target/release/svc"),
    ],
    ids=["ts-npm", "ts-pnpm", "ts-yarn", "ts-bun", "js-npm", "js-yarn", "js-bun", "bun", "python",
         "rust"],
)
def test_inferred_start_with_an_entry(
    make_project: ProjectFactory, kind: str, pm: str | None, start: str
) -> None:
    project = make_project({"src/index.ts": "", "Cargo.toml": CARGO},
                           manifest=runtime(kind, pm, "src/index.ts"))
    assert load_worker(project).scripts.start == start


@pytest.mark.parametrize(
    ("kind", "pm", "scripts", "start"),
    [
        ("typescript", "npm", {"start": "a", "dev": "b"}, "npm start"),
        ("typescript", "pnpm", {"start": "a"}, "pnpm start"),
        ("typescript", "yarn", {"start": "a"}, "yarn start"),
        ("typescript", "npm", {"dev": "b"}, "npm run dev"),
        ("typescript", "pnpm", {"dev": "b"}, "pnpm run dev"),
        ("javascript", "yarn", {"dev": "b"}, "yarn run dev"),
        ("bun", None, {"start": "a", "dev": "b"}, "bun run start"),
        ("bun", None, {"dev": "b"}, "bun run dev"),
        ("typescript", "bun", {"start": "a"}, "bun run start"),
    ],
    ids=["npm-start", "pnpm-start", "yarn-start", "npm-dev", "pnpm-dev", "yarn-dev", "bun-start",
         "bun-dev", "ts-bun-start"],
)
def test_inferred_start_without_entry_for_node_kinds_uses_package_json_scripts(
    make_project: ProjectFactory, kind: str, pm: str | None, scripts: dict[str, str], start: str
) -> None:
    import json

    project = make_project({"package.json": json.dumps({"scripts": scripts})},
                           manifest=runtime(kind, pm))
    assert load_worker(project).scripts.start == start


@pytest.mark.parametrize(
    ("present", "start"),
    [
        (("worker.py", "main.py", "app.py", "src/main.py"), "python worker.py"),
        (("main.py", "app.py", "src/main.py"), "python main.py"),
        (("app.py", "src/main.py"), "python app.py"),
        (("src/main.py",), "python src/main.py"),
    ],
    ids=["worker.py", "main.py", "app.py", "src-main.py"],
)
def test_inferred_start_without_entry_for_python_is_the_first_candidate(
    make_project: ProjectFactory, present: tuple[str, ...], start: str
) -> None:
    project = make_project({name: "" for name in present} | {"requirements.txt": ""})
    assert load_worker(project).scripts.start == start


def test_inferred_start_for_rust_is_the_release_binary(make_project: ProjectFactory) -> None:
    cargo = '[package]\nname = "pkg"\n[[bin]]\nname = "server"\n'
    assert load_worker(make_project({"Cargo.toml": cargo})).scripts.start == "./target/release/server"


def test_each_missing_script_is_inferred_independently(make_project: ProjectFactory) -> None:
    # Only start is set: install is still inferred (and setup stays empty).
    manifest = runtime("python") + "scripts:\n  start: python -m svc\n"
    spec = load_worker(make_project({"requirements.txt": ""}, manifest=manifest))
    assert spec.scripts.start == "python -m svc"
    assert spec.scripts.install == "pip install -r requirements.txt"
    assert spec.scripts.setup == ""

    # Only install is set: start is still inferred.
    manifest = runtime("typescript", "pnpm", "src/main.ts") + "scripts:\n  install: pnpm i --frozen-lockfile\n"
    spec = load_worker(make_project({"src/main.ts": ""}, manifest=manifest))
    assert spec.scripts.install == "pnpm i --frozen-lockfile"
    assert spec.scripts.start == "pnpm exec tsx src/main.ts"


@pytest.mark.parametrize("script", ["setup", "install", "start"])
def test_empty_script_means_skip(make_project: ProjectFactory, script: str) -> None:
    manifest = runtime("rust") + f'scripts:\n  {script}: ""\n'
    spec = load_worker(make_project({"Cargo.toml": CARGO}, manifest=manifest))
    assert getattr(spec.scripts, script) == ""
    others = {"setup": "", "install": "cargo build --release", "start": "./target/release/svc"}
    for other, value in others.items():
        if other != script:
            assert getattr(spec.scripts, other) == value
    assert ("scripts.start is empty: the worker has nothing to run" in spec.warnings) == (
        script == "start"
    )


def test_null_script_means_infer(make_project: ProjectFactory) -> None:
    manifest = runtime("rust") + "scripts:\n  install:\n  start: ~\n"
    spec = load_worker(make_project({"Cargo.toml": CARGO}, manifest=manifest))
    assert (spec.scripts.install, spec.scripts.start) == ("cargo build --release", "./target/release/svc")


@pytest.mark.parametrize(
    ("files", "manifest", "why"),
    [
        ({"requirements.txt": ""}, None, "none of worker.py, main.py, app.py, src/main.py exists"),
        ({"package.json": '{"scripts": {"build": "tsc"}}'}, None,
         "package.json has no scripts.start or scripts.dev"),
        ({}, runtime("typescript"), "package.json has no scripts.start or scripts.dev"),
        ({"Cargo.toml": "[workspace]\n"}, None, "Cargo.toml has no [[bin]] or [package] name"),
        ({}, runtime("rust"), "Cargo.toml has no [[bin]] or [package] name"),
        ({}, runtime("python"), "none of worker.py, main.py, app.py, src/main.py exists"),
    ],
    ids=["python-detected", "node-detected", "ts-manifest", "rust-detected", "rust-manifest",
         "python-manifest"],
)
def test_nothing_inferable_is_an_error_naming_what_to_add(
    make_project: ProjectFactory, files: dict[str, str], manifest: str | None, why: str
) -> None:
    with pytest.raises(ManifestError) as info:
        load_worker(make_project(files, manifest=manifest))
    message = str(info.value)
    assert why in message
    assert "add runtime.entry or scripts.start" in message
    assert info.value.file == ("iii.worker.yaml" if manifest else None)
    assert info.value.line is None


def test_explicit_start_never_reads_package_json(make_project: ProjectFactory) -> None:
    manifest = runtime("typescript") + "scripts:\n  start: node server.js\n"
    spec = load_worker(make_project({"package.json": "{not json"}, manifest=manifest))
    assert spec.scripts.start == "node server.js"
