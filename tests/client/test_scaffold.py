"""``iii worker init`` templates: each one resolves (detection + inference) to the scripts the
seed promises for its kind, and the CLI refuses what it should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from client.errors import ScaffoldError
from client.scaffold import LANGUAGES, write_worker
from manifests import load_worker

III = str(Path(sys.executable).with_name("iii"))
EXPECTED = {
    "typescript": ("typescript", "npm install", "npx tsx src/index.ts"),
    "javascript": ("javascript", "npm install", "node src/index.js"),
    "bun": ("bun", "bun install", "bun run src/index.ts"),
    "python": ("python", "pip install -r requirements.txt", "python worker.py"),
    "rust": ("rust", "cargo build --release", "./target/release/hello"),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_template_resolves_to_its_kinds_scripts(tmp_path: Path, language: str) -> None:
    write_worker(tmp_path / "hello", "hello", language)
    spec = load_worker(tmp_path / "hello")
    assert spec.name == "hello" and not spec.warnings
    assert (spec.kind, spec.scripts.install, spec.scripts.start) == EXPECTED[language]


def test_a_non_empty_directory_is_refused_unless_forced(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ScaffoldError, match="not empty"):
        write_worker(tmp_path, "w", "python")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
    write_worker(tmp_path, "w", "python", force=True)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    assert (tmp_path / "worker.py").exists()


def run_iii(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([III, "worker", *args], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=60)


def test_cli_writes_into_dot_name_and_names_the_next_step(tmp_path: Path) -> None:
    done = run_iii("init", "greeter", "-l", "python", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "greeter/iii.worker.yaml").read_text().count("name: greeter") == 1
    assert f"next: iii worker add {tmp_path / 'greeter'}" in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("init", "bad name"), "got 'bad name'"),
    (("init", "w", "-l", "cobol"), "unknown language 'cobol'"),
], ids=["bad-name", "bad-language"])
def test_cli_bad_input_is_one_error_line(tmp_path: Path, args: tuple[str, ...],
                                         message: str) -> None:
    done = run_iii(*args, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and message in done.stderr
    assert list(tmp_path.iterdir()) == []
