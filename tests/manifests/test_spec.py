from __future__ import annotations

import pytest

from manifests import ManifestError, validate_worker_name
from manifests.spec import sanitize_worker_name


@pytest.mark.parametrize(
    "name",
    ["a", "my-worker", "My.Worker_2", "0abc", "a" * 63, "x-" + "y" * 61],
    ids=["one-char", "dash", "dot-underscore", "digit-first", "63-chars", "63-mixed"],
)
def test_limit_worker_name_rule_accepts(name: str) -> None:
    assert validate_worker_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "a" * 64, "-lead", ".hidden", "_under", "has space", "slash/name", "..", "é",
     "semi;colon", "new\nline", "trailing\n"],
    ids=["empty", "64-chars", "leading-dash", "leading-dot", "leading-underscore", "space",
         "slash", "dotdot", "non-ascii", "semicolon", "newline", "trailing-newline"],
)
def test_limit_worker_name_rule_rejects(name: str) -> None:
    with pytest.raises(ManifestError) as info:
        validate_worker_name(name)
    message = str(info.value)
    assert "directory name" in message and "\n" not in message
    assert repr(name[:60])[:20] in message


@pytest.mark.parametrize(
    ("basename", "expected"),
    [
        ("my-project", "my-project"),
        ("My Project", "My-Project"),
        ("..hidden", "hidden"),
        ("ünïcode wörker", "n-code-w-rker"),
        ("a" * 80, "a" * 63),
        ("!!!", "worker"),
        ("_x", "x"),
    ],
    ids=["kept", "space", "leading-dots", "non-ascii", "too-long", "nothing-left", "underscore"],
)
def test_detected_name_is_the_sanitised_directory_basename(basename: str, expected: str) -> None:
    name = sanitize_worker_name(basename)
    assert name == expected
    assert validate_worker_name(name) == name
