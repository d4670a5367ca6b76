"""Bad input: every malformed manifest is one clear line with a position, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from manifests import ManifestError, load_worker
from tests.manifests.conftest import ProjectFactory

CASES: list[tuple[str, bytes, tuple[int | None, int | None], str]] = [
    ("not-yaml-unclosed-flow", b"name: w\nruntime: [\n", (3, 1), "not valid YAML"),
    ("not-yaml-bad-indent", b"name: w\n  runtime: x\n", (2, 10), "not valid YAML"),
    ("not-yaml-unclosed-quote", b"name: 'w\n", (2, 1), "not valid YAML"),
    ("not-yaml-tab-indent", b"name: w\nruntime:\n\tkind: python\n", (3, 1), "not valid YAML"),
    ("two-documents", b"name: a\n---\nname: b\n", (2, 1), "not valid YAML"),
    ("not-a-mapping-list", b"- name: w\n", (1, 1), "the manifest must be a mapping"),
    ("not-a-mapping-scalar", b"just text\n", (1, 1), "got 'just text'"),
    ("empty-file", b"", (1, 1), "got an empty file"),
    ("only-comments", b"# nothing\n", (1, 1), "got an empty file"),
    ("duplicate-key", b"name: a\nname: b\n", (2, 1), "duplicate key 'name'"),
    ("binary-junk", b"\x00\x01\x02\xff\xfe garbage", (1, 4), "not valid UTF-8"),
    ("nul-in-utf8", b"name: w\x00\n", (1, 8), "unacceptable character"),
    ("control-chars", b"name: w\nx: \x07\n", (2, 4), "unacceptable character"),
    ("invalid-utf8-later", b"name: w\nenv:\n  A: caf\xe9\n", (3, 9), "not valid UTF-8 text (byte 0xe9)"),
    ("bad-timestamp", b"name: w\nconfig: {d: 2020-02-30}\n", (None, None), "a value cannot be read"),
    ("bad-bool-tag", b"name: w\nx: !!bool maybe\n", (None, None), "a value cannot be read"),
    ("bad-int-tag", b"name: w\nx: !!int abc\n", (None, None), "a value cannot be read"),
    ("bad-merge", b"name: w\n<<: 1\n", (2, 5), "not valid YAML"),
    ("deep-nesting", b"name: w\nconfig: {a: " + b"[" * 3000 + b"]" * 3000 + b"}\n", (None, None),
     "nested too deeply"),
    ("runtime-not-mapping", b"name: w\nruntime: python\n", (2, 10), "runtime must be a mapping"),
    ("scripts-not-mapping", b"name: w\nscripts: [a]\n", (2, 10), "scripts must be a mapping"),
    ("env-not-mapping", b"name: w\nenv: A=b\n", (2, 6), "env must be a mapping"),
    ("script-not-string", b"name: w\nscripts:\n  start: [a, b]\n", (3, 10), "scripts.start must be a string"),
    ("entry-empty", b"name: w\nruntime:\n  entry: ''\n", (3, 10), "runtime.entry must not be empty"),
    ("entry-not-string", b"name: w\nruntime:\n  entry: 3\n", (3, 10), "runtime.entry must be a string, got 3 (quote it)"),
    ("kind-not-string", b"name: w\nruntime:\n  kind: {a: 1}\n", (3, 9), "runtime.kind must be a string"),
    ("name-date", b"name: 2024-01-01\n", (1, 7), "the date 2024-01-01"),
    ("name-null", b"name:\n", (1, 1), "got null"),
    ("huge-int", b"name: w\nresources:\n  memory: " + b"9" * 5000 + b"\n", (None, None),
     "a value cannot be read"),
    ("yaml-version", b"%YAML 9.9\n---\nname: w\n", (1, 1), "not valid YAML"),
]


@pytest.mark.parametrize(("content", "position", "fragment"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_manifest_is_one_clear_line(
    make_project: ProjectFactory, content: bytes, position: tuple[int | None, int | None], fragment: str
) -> None:
    project = make_project({"app.py": "", "requirements.txt": ""}, manifest=content)
    with pytest.raises(ManifestError) as info:
        load_worker(project)
    error = info.value
    assert error.file == "iii.worker.yaml"
    assert (error.line, error.column) == position, str(error)
    assert fragment in error.message
    text = str(error)
    assert "\n" not in text and "Traceback" not in text and len(text) < 400


def test_one_megabyte_manifest_is_refused_without_reading_it_all(make_project: ProjectFactory) -> None:
    content = b"name: w\n" + b"# " + b"x" * (1024 * 1024) + b"\n"
    project = make_project({"app.py": ""}, manifest=content)
    with pytest.raises(ManifestError) as info:
        load_worker(project)
    assert str(info.value) == (
        f"iii.worker.yaml: the file is {len(content)} bytes; a manifest may be at most 65536 bytes (64 KiB)"
    )


def test_utf8_bom_is_accepted(make_project: ProjectFactory) -> None:
    project = make_project({"app.py": ""}, manifest="\ufeffname: bom\nruntime: {kind: python}\n")
    assert load_worker(project).name == "bom"


def test_crlf_line_endings_are_accepted(make_project: ProjectFactory) -> None:
    project = make_project({"app.py": ""}, manifest=b"name: crlf\r\nruntime:\r\n  kind: python\r\n")
    assert load_worker(project).name == "crlf"


def test_unreadable_manifest_is_one_line() -> None:
    import os
    import tempfile

    # Root reads any file: as root, check from a child that drops to uid 65534 (nobody).
    project = Path(tempfile.mkdtemp(prefix="iii-unreadable-", dir="/tmp"))
    try:
        project.chmod(0o755)
        (project / "app.py").write_text("")
        (project / "iii.worker.yaml").write_text("name: w\n")
        (project / "iii.worker.yaml").chmod(0)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report the error message (or its absence) through the pipe
            try:
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                try:
                    load_worker(project)
                    message = "no error"
                except ManifestError as exc:
                    message = str(exc)
                os.write(write_fd, message.encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            message = pipe.read().decode()
        os.waitpid(pid, 0)
        assert message == "iii.worker.yaml: cannot read it: Permission denied"
    finally:
        import shutil

        shutil.rmtree(project)
