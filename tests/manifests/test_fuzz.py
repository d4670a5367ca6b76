"""Property: any manifest gives a valid WorkerSpec or a one-line ManifestError — nothing else."""

from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from manifests import KINDS, RESERVED_ENV_KEYS, ManifestError, WorkerSpec, load_worker
from manifests.reference import canonical_reference

# III_FUZZ_EXAMPLES raises the example count for a longer local run.
SETTINGS = settings(max_examples=int(os.environ.get("III_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

PROJECT_FILES: dict[str, st.SearchStrategy[str]] = {
    "package.json": st.sampled_from(
        ["{}", '{"scripts": {"start": "x"}}', '{"scripts": {"dev": "y"}}', "{", "[]", '{"scripts": 1}']
    ),
    "bun.lock": st.just(""),
    "yarn.lock": st.just(""),
    "pnpm-lock.yaml": st.just(""),
    "Cargo.toml": st.sampled_from(['[package]\nname = "svc"\n', "[workspace]\n", "name = ", ""]),
    "requirements.txt": st.just("iii-sdk\n"),
    "pyproject.toml": st.just("[project]\nname = 'x'\n"),
    "worker.py": st.just(""),
    "src/index.ts": st.just(""),
}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True), st.text(max_size=20),
    st.sampled_from(["typescript", "javascript", "bun", "python", "rust", "npm", "yarn", "pnpm",
                     "pip", "src/index.ts", "worker.py", "oven/bun:1", "UPPER/x", "", "2048",
                     "III_URL", "my-worker", "bad name"]),
    st.integers(min_value=0, max_value=70000),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=10), st.sampled_from(["A", "III_URL", "1x"])),
                        children, max_size=4),
    ),
    max_leaves=12,
)
known_mapping = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.sampled_from(["w", "my-worker", "-bad", "a" * 70]), values),
        "runtime": st.one_of(
            st.fixed_dictionaries({}, optional={
                "kind": st.one_of(st.sampled_from(KINDS), values),
                "language": st.one_of(st.sampled_from(KINDS), values),
                "package_manager": st.one_of(st.sampled_from(["npm", "yarn", "pnpm", "bun", "pip"]), values),
                "entry": st.one_of(st.sampled_from(["src/index.ts", "worker.py", "x y.py"]), values),
                "base_image": st.one_of(st.sampled_from(["python", "oven/bun:1", "a b", "localhost:5000/x"]), values),
                "entyr": values,
            }),
            values,
        ),
        "resources": st.one_of(
            st.fixed_dictionaries({}, optional={
                "memory": st.one_of(st.integers(min_value=-10, max_value=70000), values),
                "cpus": st.one_of(st.integers(min_value=-2, max_value=70), values),
            }),
            values,
        ),
        "scripts": st.one_of(
            st.fixed_dictionaries({}, optional={k: st.one_of(st.sampled_from(["", "run it"]), values)
                                               for k in ("setup", "install", "start")}),
            values,
        ),
        "env": st.one_of(st.dictionaries(st.sampled_from(["A", "B_2", "III_URL", "III_ISOLATION", "1X", "a-b"]),
                                         st.one_of(st.text(max_size=8), values), max_size=4), values),
        "config": values,
        "description": values, "iii": values, "deploy": values, "version": values,
        "resouces": values, "zzz": values,
    },
)
yaml_tokens = st.lists(
    st.sampled_from([
        "name:", " w", "\n", "  ", "- ", "{", "}", "[", "]", ": ", ",", "&a ", "*a", "!!int ",
        "!!bool ", "!!binary ", "!!set ", "<<: ", "runtime:", "kind:", " python", " bun", "resources:",
        "memory:", " 4096", " -1", " true", "cpus:", "scripts:", "start:", " ''", "'", '"', "# c",
        "---\n", "\t", "~", " 2020-02-30", "env:", "III_URL:", "config:", "? ", "|", ">", "\x00",
        "\u00e9", "\ufeff", "%YAML 1.2\n", "...\n", "entry:", "base_image:", " UPPER", "language:",
    ]),
    max_size=40,
).map("".join)


def check(manifest: bytes | None, files: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="iii-fuzz-") as tmp:
        project = Path(tmp) / "proj"
        project.mkdir()
        for relative, content in files.items():
            (project / relative).parent.mkdir(parents=True, exist_ok=True)
            (project / relative).write_text(content)
        if manifest is not None:
            (project / "iii.worker.yaml").write_bytes(manifest)
        try:
            spec = load_worker(project)
        except ManifestError as error:
            text = str(error)
            assert error.message and text and "\n" not in text and "\r" not in text
            assert error.line is None or error.line >= 1
            return
        assert_valid(spec)


def assert_valid(spec: WorkerSpec) -> None:
    assert NAME_RE.match(spec.name)
    assert spec.kind in KINDS
    assert spec.package_manager in (None, "npm", "yarn", "pnpm", "bun")
    assert canonical_reference(spec.base_image) == spec.base_image
    assert 128 <= spec.resources.memory <= 65536 and 1 <= spec.resources.cpus <= 64
    assert type(spec.resources.memory) is int and type(spec.resources.cpus) is int
    assert all(type(k) is str and type(v) is str for k, v in spec.env.items())
    assert not set(spec.env) & set(RESERVED_ENV_KEYS)
    assert all(type(s) is str for s in (spec.scripts.setup, spec.scripts.install, spec.scripts.start))
    assert all(type(w) is str and "\n" not in w for w in spec.warnings)
    msgspec.json.encode(spec)  # the spec crosses the socket as JSON


def dump_yaml(document: Any) -> bytes:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(document, out)
    return out.getvalue().encode()


project_files = st.dictionaries(st.sampled_from(sorted(PROJECT_FILES)), st.just(""), max_size=5).flatmap(
    lambda chosen: st.fixed_dictionaries({name: PROJECT_FILES[name] for name in chosen})
)


@SETTINGS
@given(document=known_mapping, files=project_files)
def test_random_mappings_over_the_known_keys(document: dict[str, Any], files: dict[str, str]) -> None:
    check(dump_yaml(document), files)


@SETTINGS
@given(document=values, files=project_files)
def test_random_yaml_documents(document: Any, files: dict[str, str]) -> None:
    check(dump_yaml(document), files)


@SETTINGS
@given(text=yaml_tokens, files=project_files)
def test_random_yaml_ish_text(text: str, files: dict[str, str]) -> None:
    check(text.encode("utf-8", "surrogatepass"), files)


@SETTINGS
@given(data=st.binary(max_size=200), files=project_files)
def test_random_bytes(data: bytes, files: dict[str, str]) -> None:
    check(data, files)


@SETTINGS
@given(files=project_files)
def test_detection_without_a_manifest(files: dict[str, str]) -> None:
    check(None, files)
