from __future__ import annotations

import pickle

import pytest

from manifests import ManifestError


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("iii.worker.yaml", 4, 9, "resources.memory must be a positive integer (MiB), got 'lots'"),
         "iii.worker.yaml:4:9: resources.memory must be a positive integer (MiB), got 'lots'"),
        (("iii.worker.yaml", 3, None, "bad"), "iii.worker.yaml:3: bad"),
        (("package.json", None, None, "not valid JSON"), "package.json: not valid JSON"),
        ((None, None, None, "cannot detect the project type of /p"),
         "cannot detect the project type of /p"),
        (("f", None, 5, "column without line is dropped"), "f: column without line is dropped"),
    ],
    ids=["file-line-col", "file-line", "file-only", "no-file", "col-without-line"],
)
def test_str_is_file_line_column_message(args: tuple[object, ...], text: str) -> None:
    error = ManifestError(*args)  # type: ignore[arg-type]
    assert str(error) == text


def test_message_is_always_one_line() -> None:
    error = ManifestError("iii.worker.yaml", 1, 1, "first\nsecond\r\n  third")
    assert error.message == "first second third"
    assert "\n" not in str(error)


def test_is_a_value_error_and_pickles() -> None:
    error = ManifestError("iii.worker.yaml", 2, 3, "m")
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.file, copy.line, copy.column, copy.message) == ("iii.worker.yaml", 2, 3, "m")
