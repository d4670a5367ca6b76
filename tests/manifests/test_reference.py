"""manifests.reference: Docker Hub naming rules (used to canonicalise runtime.base_image)."""

from __future__ import annotations

import pytest

from manifests.reference import InvalidReference, canonical_reference, parse_reference


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("python", "docker.io/library/python:latest"),
        ("oven/bun:1", "docker.io/oven/bun:1"),
        ("docker.io/iiidev/node:latest", "docker.io/iiidev/node:latest"),
        ("registry-1.docker.io/library/rust:slim-bookworm", "docker.io/library/rust:slim-bookworm"),
        ("localhost:5000/x", "localhost:5000/x:latest"),
        ("localhost/x:1", "localhost/x:1"),
        ("127.0.0.1:5000/a/b:c", "127.0.0.1:5000/a/b:c"),
        ("ghcr.io/acme/tool", "ghcr.io/acme/tool:latest"),
        ("python@sha256:" + "a" * 64, "docker.io/library/python@sha256:" + "a" * 64),
        ("python:3.12@sha256:" + "b" * 64, "docker.io/library/python:3.12@sha256:" + "b" * 64),
    ],
    ids=["official", "hub-user-tag", "already-canonical", "hub-alias", "localhost-port",
         "localhost", "ip-port-nested", "other-registry", "digest", "tag-and-digest"],
)
def test_canonical_reference(text: str, canonical: str) -> None:
    assert canonical_reference(text) == canonical
    assert canonical_reference(canonical) == canonical


@pytest.mark.parametrize(
    "text",
    ["", " ", "UPPER/x", "a b", "x:", "x@sha256:short", "-x", "x//y", "x:tag with space",
     "host:notaport/x/", "a" * 2000],
    ids=["empty", "blank", "uppercase", "space", "empty-tag", "short-digest", "leading-dash",
         "empty-component", "tag-space", "trailing-slash", "too-long"],
)
def test_invalid_reference(text: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    assert "\n" not in str(info.value)


def test_parts() -> None:
    ref = parse_reference("localhost:5000/team/img:2")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == ("localhost:5000", "team/img", "2", None)
    assert ref.reference == "2"
