"""Request shapes: upstream's three ``cmd`` shapes, both ``env`` shapes, ``lang``, catalog."""

from __future__ import annotations

import pytest

from daemon.config.sandbox_policy import SandboxPolicy
from daemon.ephemeral.catalog import catalog_list, resolve_image
from daemon.ephemeral.commands import decode_b64, interpreter_for, resolve_argv, resolve_env
from daemon.ephemeral.errors import SandboxError


@pytest.mark.parametrize(("cmd", "args", "argv", "expected"), [
    ("node /app/x.js", [], [], ["node", "/app/x.js"]),
    ("node", ["-v"], [], ["node", "-v"]),
    ("", [], ["python3", "-c", "print(1)"], ["python3", "-c", "print(1)"]),
    ("sh -c 'echo a b'", [], [], ["sh", "-c", "echo a b"]),
    ("true", [], [], ["true"]),
], ids=["shell-line", "cmd-args", "argv", "quoted", "bare"])
def test_cmd_shapes(cmd: str, args: list[str], argv: list[str], expected: list[str]) -> None:
    assert resolve_argv(cmd, args, argv) == expected


@pytest.mark.parametrize(("cmd", "args", "argv", "fragment"), [
    ("x", [], ["y"], "cannot be combined"),
    ("a b", ["c"], [], "ambiguous"),
    ("echo 'x", [], [], "unbalanced quotes"),
    ("", [], [], "cmd is required"),
], ids=["argv-and-cmd", "whitespace-and-args", "unbalanced", "empty"])
def test_bad_cmd_shapes_are_s001(cmd: str, args: list[str], argv: list[str],
                                 fragment: str) -> None:
    with pytest.raises(SandboxError) as info:
        resolve_argv(cmd, args, argv)
    assert info.value.code.name == "S001" and fragment in info.value.message


def test_env_shapes() -> None:
    assert resolve_env(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    assert resolve_env({"npm_config_x": "1"}) == {"npm_config_x": "1"}
    for bad in (["NOEQUALS"], {"1X": "a"}, {"III_URL": "ws://evil"}):
        with pytest.raises(SandboxError):
            resolve_env(bad)


def test_lang_and_stdin() -> None:
    assert interpreter_for("python") == ("python3", "py")
    assert interpreter_for("/usr/bin/perl") == ("/usr/bin/perl", "txt")
    with pytest.raises(SandboxError, match="unknown lang 'cobol'"):
        interpreter_for("cobol")
    assert decode_b64("stdin", "aGk=") == b"hi"
    with pytest.raises(SandboxError, match="stdin is not valid base64"):
        decode_b64("stdin", "h!")


def test_catalog_policy() -> None:
    policy = SandboxPolicy(catalog={"python": "localhost:5000/py:1"},
                           custom_images={"tools": "ghcr.io/acme/tools:1"},
                           image_allowlist=["python", "shell", "tools"])
    assert resolve_image(policy, "python") == "localhost:5000/py:1"
    names = [(e.name, e.kind) for e in catalog_list(policy).images]
    assert names == [("shell", "preset"), ("python", "custom"), ("tools", "custom")]
    for refused in ("node", "docker.io/library/alpine:3"):
        with pytest.raises(SandboxError) as info:
            resolve_image(policy, refused)
        assert info.value.code.name == "S100"
    anyimage = SandboxPolicy(allow_any_image=True)
    assert resolve_image(anyimage, "alpine:3") == "docker.io/library/alpine:3"
    assert [e.name for e in catalog_list(SandboxPolicy(image_allowlist=[])).images] == []
