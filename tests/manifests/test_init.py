from __future__ import annotations

import ast
from pathlib import Path

import manifests


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(manifests) if not name.startswith("_")}
    submodules = {"errors", "loader", "spec", "describe", "detect", "fields", "infer", "source",
                  "reference", "annotations"}
    assert set(manifests.__all__) == public - submodules
    for name in manifests.__all__:
        assert getattr(manifests, name) is not None


def test_architecture_contract_names_are_exported() -> None:
    for name in ("load_worker", "WorkerSpec", "Scripts", "Resources", "ManifestError",
                 "validate_worker_name"):
        assert name in manifests.__all__


def test_manifests_imports_none_of_our_other_packages() -> None:
    ours = {"daemon", "client", "vmm_ffi", "tests", "examples"}
    for module in Path(manifests.__file__).parent.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert not roots & ours, f"{module.name} imports {roots & ours}"
