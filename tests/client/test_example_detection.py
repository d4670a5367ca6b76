"""Every example's scripts come from detection + inference (SPEC §4), not from hand-written
``scripts:``: the manifest-free examples are checked as they are, the others with their
``iii.worker.yaml`` removed (their twin), through the real ``iii worker validate``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.client.test_validate import EXAMPLES, iii

# example → (kind, package manager, install, start, base image) that detection alone must give.
DETECTED = {
    "ts-worker": ("typescript", "npm", "npm install", "npm start", "docker.io/iiidev/node:latest"),
    "js-yarn-worker": ("typescript", "yarn", "yarn install", "yarn start",
                       "docker.io/iiidev/node:latest"),
    "js-pnpm-worker": ("typescript", "pnpm", "pnpm install", "pnpm start",
                       "docker.io/iiidev/node:latest"),
    "bun-worker": ("bun", "bun", "bun install", "bun run start", "docker.io/oven/bun:latest"),
    "python-worker": ("python", None, "pip install -r requirements.txt", "python worker.py",
                      "docker.io/iiidev/python:latest"),
    "rust-worker": ("rust", None, "cargo build --release", "./target/release/rust-worker",
                    "docker.io/library/rust:slim-bookworm"),
}


def validate(project: Path) -> dict[str, object]:
    result = iii("worker", "validate", str(project), "--json")
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


@pytest.mark.parametrize("example", sorted(DETECTED))
def test_detection_alone_gives_the_examples_scripts(example: str, tmp_path: Path) -> None:
    twin = tmp_path / example
    shutil.copytree(EXAMPLES / example, twin, ignore=shutil.ignore_patterns("node_modules"))
    manifest = twin / "iii.worker.yaml"
    with_manifest = validate(twin) if manifest.exists() else None
    manifest.unlink(missing_ok=True)
    detected = validate(twin)
    kind, pm, install, start, image = DETECTED[example]
    scripts = detected["scripts"]
    assert isinstance(scripts, dict)
    assert (detected["name"], detected["kind"], detected["package_manager"]) == (example, kind, pm)
    assert (scripts["install"], scripts["start"], detected["base_image"]) == (install, start, image)
    if with_manifest is None:
        return
    # The manifest may name an entry where detection runs package.json's start script: the
    # same command either way.
    named = with_manifest["scripts"]
    assert isinstance(named, dict) and named["install"] == install
    assert with_manifest["base_image"] == image
    if named["start"] != start:
        package = json.loads((twin / "package.json").read_text())
        assert f"npx {package['scripts']['start']}" == named["start"]
