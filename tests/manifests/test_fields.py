"""SPEC §3: the manifest's fields, defaults, warnings and limits — one test per rule."""

from __future__ import annotations

import pytest

from manifests import ManifestError, load_worker
from manifests.fields import LANGUAGE_DEPRECATED
from tests.manifests.conftest import ProjectFactory

PY = {"worker.py": "print('hi')\n", "requirements.txt": "iii-sdk\n"}


def load(make_project: ProjectFactory, manifest: str, files: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return load_worker(make_project(files if files is not None else PY, manifest=manifest))


def error_of(make_project: ProjectFactory, manifest: str, files: dict[str, str] | None = None) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load(make_project, manifest, files)
    return info.value


# --- fields and defaults -------------------------------------------------------------------


def test_name_is_required(make_project: ProjectFactory) -> None:
    error = error_of(make_project, "runtime:\n  kind: python\n")
    assert error.file == "iii.worker.yaml"
    assert "name is required" in error.message


def test_name_is_taken_from_the_manifest(make_project: ProjectFactory) -> None:
    spec = load(make_project, "name: my-worker\nruntime:\n  kind: python\n")
    assert spec.name == "my-worker"


def test_runtime_kind_defaults_to_typescript(make_project: ProjectFactory) -> None:
    spec = load(make_project, "name: w\nruntime:\n  entry: src/index.ts\n", {"src/index.ts": ""})
    assert spec.kind == "typescript"
    assert spec.package_manager == "npm"
    assert spec.scripts.start == "npx tsx src/index.ts"


@pytest.mark.parametrize("kind", ["typescript", "javascript", "bun", "python", "rust"])
def test_runtime_kind_is_one_of_the_five_kinds(make_project: ProjectFactory, kind: str) -> None:
    files = {"main.js": "", "Cargo.toml": '[package]\nname = "w"\n'}
    spec = load(make_project, f"name: w\nruntime:\n  kind: {kind}\n  entry: main.js\n", files)
    assert spec.kind == kind


def test_runtime_kind_outside_the_five_is_an_error(make_project: ProjectFactory) -> None:
    error = error_of(make_project, "name: w\nruntime:\n  kind: pyhton\n")
    assert str(error) == (
        "iii.worker.yaml:3:9: runtime.kind must be one of typescript, javascript, bun, python, "
        "rust, got 'pyhton' (did you mean 'python'?)"
    )


@pytest.mark.parametrize("pm", ["npm", "yarn", "pnpm", "bun"])
def test_runtime_package_manager_is_npm_yarn_pnpm_or_bun(make_project: ProjectFactory, pm: str) -> None:
    spec = load(
        make_project,
        f"name: w\nruntime:\n  kind: javascript\n  package_manager: {pm}\n  entry: a.js\n",
        {"a.js": ""},
    )
    assert spec.package_manager == pm


def test_runtime_package_manager_outside_the_four_is_an_error_for_node_kinds(
    make_project: ProjectFactory,
) -> None:
    error = error_of(make_project, "name: w\nruntime:\n  kind: typescript\n  package_manager: pip\n")
    assert (error.line, error.column) == (4, 20)
    assert "runtime.package_manager must be one of npm, yarn, pnpm, bun" in error.message
    assert "'pip'" in error.message


@pytest.mark.parametrize(
    ("kind", "pm"), [("python", "pip"), ("python", "npm"), ("rust", "cargo")],
    ids=["python-pip", "python-npm", "rust-cargo"],
)
def test_runtime_package_manager_only_applies_to_typescript_and_javascript(
    make_project: ProjectFactory, kind: str, pm: str
) -> None:
    files = {**PY, "Cargo.toml": '[package]\nname = "w"\n'}
    spec = load(make_project, f"name: w\nruntime:\n  kind: {kind}\n  package_manager: {pm}\n", files)
    assert spec.package_manager is None
    assert any(f"runtime.package_manager '{pm}' is ignored for kind {kind}" in w for w in spec.warnings)


def test_runtime_package_manager_of_kind_bun_is_bun(make_project: ProjectFactory) -> None:
    spec = load(make_project, "name: w\nruntime:\n  kind: bun\n  package_manager: npm\n  entry: a.ts\n",
                {"a.ts": ""})
    assert spec.package_manager == "bun"
    assert spec.scripts.install == "bun install"
    assert any("ignored for kind bun" in w for w in spec.warnings)


def test_runtime_entry_is_kept(make_project: ProjectFactory) -> None:
    spec = load(make_project, "name: w\nruntime:\n  kind: python\n  entry: svc/run.py\n",
                {"svc/run.py": ""})
    assert spec.entry == "svc/run.py"
    assert spec.scripts.start == "python svc/run.py"
    assert spec.warnings == []


def test_runtime_entry_that_does_not_exist_warns(make_project: ProjectFactory) -> None:
    spec = load(make_project, "name: w\nruntime:\n  kind: python\n  entry: nope.py\n")
    assert spec.scripts.start == "python nope.py"
    assert spec.warnings == ["runtime.entry 'nope.py' does not exist in the project"]


def test_runtime_entry_is_shell_quoted_in_inferred_start(make_project: ProjectFactory) -> None:
    spec = load(make_project, "name: w\nruntime:\n  kind: python\n  entry: 'my app.py'\n",
                {"my app.py": ""})
    assert spec.scripts.start == "python 'my app.py'"


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("oven/bun:1", "docker.io/oven/bun:1"),
        ("python", "docker.io/library/python:latest"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("ghcr.io/acme/img:2.0", "ghcr.io/acme/img:2.0"),
        ("index.docker.io/library/node:20", "docker.io/library/node:20"),
    ],
    ids=["hub-user", "hub-official", "localhost-registry", "other-registry", "hub-alias"],
)
def test_runtime_base_image_overrides_the_default_and_is_canonical(
    make_project: ProjectFactory, written: str, canonical: str
) -> None:
    spec = load(make_project, f"name: w\nruntime:\n  kind: python\n  base_image: {written}\n")
    assert spec.base_image == canonical


def test_runtime_base_image_invalid_is_an_error_at_its_position(make_project: ProjectFactory) -> None:
    error = error_of(make_project, "name: w\nruntime:\n  kind: python\n  base_image: 'UPPER/Case'\n")
    assert (error.file, error.line, error.column) == ("iii.worker.yaml", 4, 15)
    assert error.message.startswith("runtime.base_image: invalid repository")


def test_resources_default_to_2048_mib_and_2_cpus(make_project: ProjectFactory) -> None:
    spec = load(make_project, "name: w\nruntime:\n  kind: python\n")
    assert (spec.resources.memory, spec.resources.cpus) == (2048, 2)


def test_resources_are_taken_from_the_manifest(make_project: ProjectFactory) -> None:
    spec = load(make_project, "name: w\nruntime: {kind: python}\nresources: {memory: 512, cpus: 4}\n")
    assert (spec.resources.memory, spec.resources.cpus) == (512, 4)


def test_scripts_setup_install_start_are_taken_from_the_manifest(make_project: ProjectFactory) -> None:
    spec = load(
        make_project,
        "name: w\nruntime:\n  kind: python\nscripts:\n  setup: apt-get update\n"
        "  install: pip install -e .\n  start: |\n    python -m w\n",
    )
    assert spec.scripts.setup == "apt-get update"
    assert spec.scripts.install == "pip install -e ."
    assert spec.scripts.start == "python -m w\n"


def test_env_maps_strings_to_strings(make_project: ProjectFactory) -> None:
    spec = load(make_project, "name: w\nruntime: {kind: python}\nenv:\n  MY_API_KEY: sk-abc123\n"
                "  LOG_LEVEL: debug\n  PORT: '8080'\n")
    assert spec.env == {"MY_API_KEY": "sk-abc123", "LOG_LEVEL": "debug", "PORT": "8080"}


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("PORT: 8080", "env.PORT must be a string, got 8080 (quote it)"),
        ("DEBUG: true", "env.DEBUG must be a string, got true (quote it)"),
        ("EMPTY:", "env.EMPTY must be a string, got null"),
        ("LIST: [a]", "env.LIST must be a string, got a list"),
        ("1BAD: x", "env key '1BAD' is not a valid variable name"),
        ("A-B: x", "env key 'A-B' is not a valid variable name"),
        ('NUL: "a\\0b"', "env.NUL must not contain NUL characters"),
    ],
    ids=["int", "bool", "null", "list", "digit-first-key", "dash-key", "nul-value"],
)
def test_env_values_must_be_strings_and_keys_variable_names(
    make_project: ProjectFactory, line: str, fragment: str
) -> None:
    error = error_of(make_project, f"name: w\nruntime: {{kind: python}}\nenv:\n  {line}\n")
    assert error.line == 4
    assert fragment in error.message


# --- runtime.language, extra keys, unknown keys, reserved env -----------------------------------


def test_runtime_language_is_a_deprecated_alias_of_kind(make_project: ProjectFactory) -> None:
    spec = load(make_project, "name: w\nruntime:\n  language: python\n")
    assert spec.kind == "python"
    assert spec.warnings == [LANGUAGE_DEPRECATED]
    assert LANGUAGE_DEPRECATED == "runtime.language is deprecated; rename it to runtime.kind"


def test_runtime_kind_wins_over_language(make_project: ProjectFactory) -> None:
    spec = load(make_project, "name: w\nruntime:\n  language: rust\n  kind: python\n",
                {**PY, "Cargo.toml": '[package]\nname = "w"\n'})
    assert spec.kind == "python"
    assert LANGUAGE_DEPRECATED in spec.warnings


ACCEPTED = ["description: A worker", "version: 1.2.3", "iii: v1", "deploy: image",
            "manifest: pyproject.toml", "tags: [a, b]", "dependencies: {x: 1}", "language: python",
            "bin: w", "type: worker", "repo: https://example.com/w", "config: {a: 1}"]


@pytest.mark.parametrize("line", ACCEPTED, ids=[a.split(":")[0] for a in ACCEPTED])
def test_accepted_extra_top_level_keys_are_silent(make_project: ProjectFactory, line: str) -> None:
    spec = load(make_project, f"name: w\nruntime: {{kind: python}}\n{line}\n")
    assert spec.warnings == []


def test_config_mapping_is_copied(make_project: ProjectFactory) -> None:
    spec = load(
        make_project,
        "name: w\nruntime: {kind: python}\nconfig:\n  api:\n    url: ${API_URL:http://x}\n"
        "    retries: 3\n  flags: [a, true, 1.5, null]\n  when: 2024-01-02\n",
    )
    assert spec.config == {
        "api": {"url": "${API_URL:http://x}", "retries": 3},
        "flags": ["a", True, 1.5, None],
        "when": "2024-01-02",
    }
    assert type(spec.config["api"]) is dict and type(spec.config["api"]["retries"]) is int


@pytest.mark.parametrize(
    ("manifest", "fragment"),
    [
        ("config: [1, 2]", "config must be a mapping, got a list"),
        ("config: {1: a}", "config keys must be strings, got 1"),
        ("config:\n  a: &x [*x, *x]\n", None),
    ],
    ids=["not-a-mapping", "int-key", "recursive-alias"],
)
def test_config_must_be_a_mapping_of_plain_values(
    make_project: ProjectFactory, manifest: str, fragment: str | None
) -> None:
    try:
        spec = load(make_project, f"name: w\nruntime: {{kind: python}}\n{manifest}\n")
    except ManifestError as error:
        assert fragment is None or fragment in error.message
    else:
        assert fragment is None
        assert isinstance(spec.config, dict)


def test_config_alias_bomb_is_refused(make_project: ProjectFactory) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    manifest = "name: w\nruntime: {kind: python}\nconfig:\n" + "".join(f"  {l}\n" for l in lines)
    error = error_of(make_project, manifest)
    assert "config is too large" in error.message


@pytest.mark.parametrize(
    ("manifest", "warning"),
    [
        ("resouces: {memory: 512}",
         "unknown key 'resouces' at iii.worker.yaml:3:1 is ignored (did you mean 'resources'?)"),
        ("scirpts: {}", "unknown key 'scirpts' at iii.worker.yaml:3:1 is ignored (did you mean 'scripts'?)"),
        ("zzz: 1", "unknown key 'zzz' at iii.worker.yaml:3:1 is ignored"),
        ("resources:\n  memroy: 512",
         "unknown key 'resources.memroy' at iii.worker.yaml:4:3 is ignored (did you mean 'resources.memory'?)"),
        ("runtime2: {}", "unknown key 'runtime2' at iii.worker.yaml:3:1 is ignored (did you mean 'runtime'?)"),
        ("1: x", "unknown key 1 at iii.worker.yaml:3:1 is ignored"),
    ],
    ids=["resouces", "scirpts", "no-close-match", "nested", "runtime2", "non-string"],
)
def test_unknown_key_warns_naming_it_with_did_you_mean(
    make_project: ProjectFactory, manifest: str, warning: str
) -> None:
    spec = load(make_project, f"name: w\nruntime: {{kind: python}}\n{manifest}\n")
    assert spec.warnings == [warning]


@pytest.mark.parametrize("key", ["III_URL", "III_ENGINE_URL", "III_WORKER_NAME", "III_ISOLATION"])
def test_reserved_env_keys_are_dropped_with_a_warning(make_project: ProjectFactory, key: str) -> None:
    spec = load(make_project, f"name: w\nruntime: {{kind: python}}\nenv:\n  {key}: x\n  KEEP: y\n")
    assert spec.env == {"KEEP": "y"}
    assert spec.warnings == [
        f"env.{key} is reserved and set by the system; it is dropped from the manifest env"
    ]


# --- errors and limits ----------------------------------------------------------------------


def test_validation_error_is_one_line_naming_file_line_column_and_field(
    make_project: ProjectFactory,
) -> None:
    # SPEC §3's example, position included: 'lots' at line 4, column 9.
    manifest = "name: w\nruntime: {kind: python}\nresources: {cpus: 1,\nmemory: lots}\n"
    error = error_of(make_project, manifest)
    assert str(error) == "iii.worker.yaml:4:9: resources.memory must be a positive integer (MiB), got 'lots'"


def test_limit_manifest_file_is_at_most_64_kib(make_project: ProjectFactory) -> None:
    padding = "# " + "x" * 98 + "\n"
    body = "name: w\nruntime: {kind: python}\n"
    fits = body + padding * ((64 * 1024 - len(body)) // len(padding))
    assert len(fits.encode()) <= 64 * 1024
    assert load(make_project, fits).name == "w"
    too_big = fits + padding
    error = error_of(make_project, too_big)
    assert str(error).startswith("iii.worker.yaml: the file is ")
    assert "at most 65536 bytes (64 KiB)" in error.message


@pytest.mark.parametrize(
    "name", ["'has space'", "-dash", "a/b", "'" + "a" * 64 + "'", "''", "123", "true", "[a]"],
    ids=["space", "leading-dash", "slash", "64-chars", "empty", "int", "bool", "list"],
)
def test_limit_name_rule_in_the_manifest(make_project: ProjectFactory, name: str) -> None:
    error = error_of(make_project, f"runtime: {{kind: python}}\nname: {name}\n")
    assert (error.line, error.column) == (2, 7)
    assert error.message.startswith("name must be 1-63 characters of letters, digits")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("128", None), ("65536", None),
        ("127", "resources.memory must be between 128 and 65536 (MiB), got 127"),
        ("65537", "resources.memory must be between 128 and 65536 (MiB), got 65537"),
        ("-5", "resources.memory must be between 128 and 65536 (MiB), got -5"),
        ("0", "resources.memory must be between 128 and 65536 (MiB), got 0"),
        ("99999999999999999999999", "resources.memory must be between 128 and 65536 (MiB), got 99999999999999999999999"),
        ("2048.0", "resources.memory must be a positive integer (MiB), got 2048.0"),
        ("'2048'", "resources.memory must be a positive integer (MiB), got '2048'"),
        ("true", "resources.memory must be a positive integer (MiB), got true"),
        ("[1]", "resources.memory must be a positive integer (MiB), got a list"),
    ],
    ids=["min", "max", "below", "above", "negative", "zero", "huge", "float", "string", "bool", "list"],
)
def test_limit_memory_is_128_to_65536_mib(
    make_project: ProjectFactory, value: str, message: str | None
) -> None:
    manifest = f"name: w\nruntime: {{kind: python}}\nresources:\n  memory: {value}\n"
    if message is None:
        assert load(make_project, manifest).resources.memory == int(value)
    else:
        assert str(error_of(make_project, manifest)) == f"iii.worker.yaml:4:11: {message}"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1", None), ("64", None),
        ("0", "resources.cpus must be between 1 and 64, got 0"),
        ("65", "resources.cpus must be between 1 and 64, got 65"),
        ("-1", "resources.cpus must be between 1 and 64, got -1"),
        ("1.5", "resources.cpus must be a positive integer, got 1.5"),
        ("false", "resources.cpus must be a positive integer, got false"),
        ("&t true", "resources.cpus must be a positive integer, got true"),
        ("two", "resources.cpus must be a positive integer, got 'two'"),
    ],
    ids=["min", "max", "zero", "above", "negative", "float", "bool", "anchored-bool", "word"],
)
def test_limit_cpus_is_1_to_64(make_project: ProjectFactory, value: str, message: str | None) -> None:
    manifest = f"name: w\nruntime: {{kind: python}}\nresources:\n  cpus: {value}\n"
    if message is None:
        assert load(make_project, manifest).resources.cpus == int(value)
    else:
        error = error_of(make_project, manifest)
        assert (error.line, error.message) == (4, message)


@pytest.mark.parametrize(
    ("manifest", "line", "key"),
    [
        ("name: a\nname: b\n", 2, "name"),
        ("name: w\nruntime:\n  kind: python\n  kind: rust\n", 4, "kind"),
        ("name: w\nenv: {A: x, A: y}\n", 2, "A"),
    ],
    ids=["top-level", "nested", "flow"],
)
def test_limit_duplicate_yaml_keys_are_an_error(
    make_project: ProjectFactory, manifest: str, line: int, key: str
) -> None:
    error = error_of(make_project, manifest)
    assert error.line == line
    assert error.message.startswith(f"duplicate key {key!r}")
    assert "each key may appear only once" in error.message


# --- default images -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("runtime", "image"),
    [
        ("kind: typescript", "docker.io/iiidev/node:latest"),
        ("kind: javascript", "docker.io/iiidev/node:latest"),
        ("kind: bun", "docker.io/oven/bun:latest"),
        ("{kind: typescript, package_manager: bun}", "docker.io/oven/bun:latest"),
        ("{kind: javascript, package_manager: bun}", "docker.io/oven/bun:latest"),
        ("{kind: typescript, package_manager: pnpm}", "docker.io/iiidev/node:latest"),
        ("kind: python", "docker.io/iiidev/python:latest"),
        ("kind: rust", "docker.io/library/rust:slim-bookworm"),
    ],
    ids=["typescript", "javascript", "bun", "ts-with-bun-pm", "js-with-bun-pm", "ts-with-pnpm",
         "python", "rust"],
)
def test_default_base_image_per_kind(make_project: ProjectFactory, runtime: str, image: str) -> None:
    runtime_yaml = f"  {runtime}" if not runtime.startswith("{") else ""
    body = f"runtime:\n{runtime_yaml}\n" if runtime_yaml else f"runtime: {runtime}\n"
    files = {"package.json": '{"scripts": {"start": "x"}}', "Cargo.toml": '[package]\nname = "w"\n',
             "main.py": ""}
    spec = load(make_project, f"name: w\n{body}", files)
    assert spec.base_image == image
