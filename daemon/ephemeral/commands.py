"""Request shapes upstream accepts, normalised: the three ``cmd`` shapes of ``sandbox::exec``,
the two ``env`` shapes, base64 stdin, and ``sandbox::run``'s ``lang``."""

from __future__ import annotations

import base64
import binascii
import re
import shlex

from client.protocol.sandbox import EnvShape
from daemon.ephemeral.errors import SCode, sandbox_error
from manifests.spec import RESERVED_ENV_KEYS

__all__ = ["decode_b64", "interpreter_for", "resolve_argv", "resolve_env"]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def resolve_argv(cmd: str, args: list[str], argv: list[str]) -> list[str]:
    """upstream ``resolve_cmd_shape``: ``argv`` wins (alone); a ``cmd`` with whitespace and no
    ``args`` is shlex-split; else ``[cmd, *args]``. Raises S001 with the fix in the message."""
    if argv:
        if cmd or args:
            raise sandbox_error(SCode.S001, "invalid request: `argv` cannot be combined with "
                                f"`cmd` or `args`. Pick one shape. Got argv={argv!r}, "
                                f"cmd={cmd!r}, args={args!r}")
        return list(argv)
    if any(c.isspace() for c in cmd):
        if args:
            raise sandbox_error(SCode.S001, "invalid request: cmd contains whitespace "
                                "(shell-line shape) AND `args` is set; that is ambiguous. Either "
                                "remove whitespace from cmd and pass arguments via `args`, or "
                                f"leave `args` empty so cmd is shlex-split. Got cmd={cmd!r}, "
                                f"args={args!r}")
        try:
            parts = shlex.split(cmd)
        except ValueError as exc:
            raise sandbox_error(SCode.S001, f"invalid request: cmd has unbalanced quotes and "
                                f"cannot be shlex-split: {cmd!r}. Use `argv: [...]` for argv "
                                "arrays with embedded quotes.") from exc
        if not parts:
            raise sandbox_error(SCode.S001, f"invalid request: cmd is empty after shlex split: "
                                f"{cmd!r}")
        return parts
    if not cmd:
        raise sandbox_error(SCode.S001, "invalid request: cmd is required and must be non-empty "
                            "(or pass `argv` with at least one element)")
    return [cmd, *args]


def resolve_env(env: EnvShape) -> dict[str, str]:
    """Both shapes → a dict; bad names (S001) and the system's reserved keys are refused."""
    pairs: dict[str, str] = {}
    if isinstance(env, dict):
        pairs = dict(env)
    else:
        for item in env:
            key, sep, value = item.partition("=")
            if not sep:
                raise sandbox_error(SCode.S001, f"invalid request: env entry {item!r} is not "
                                    "K=V (or pass env as a {\"K\": \"V\"} map)")
            pairs[key] = value
    bad = sorted(k for k in pairs if not _ENV_NAME.match(k))
    if bad:
        raise sandbox_error(SCode.S001, f"invalid request: env contains invalid variable "
                            f"name(s): {bad}. Names must match `[A-Za-z_][A-Za-z0-9_]*`.")
    reserved = sorted(set(pairs) & set(RESERVED_ENV_KEYS))
    if reserved:
        raise sandbox_error(SCode.S001, f"invalid request: env {reserved[0]} is reserved (set "
                            "by the system); leave it out")
    return pairs


def decode_b64(field: str, text: str | None) -> bytes:
    """Base64 request bytes (``stdin``, ``content_b64``); S001 naming the field when invalid."""
    if text is None:
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise sandbox_error(SCode.S001, f"invalid request: {field} is not valid base64: "
                            f"{exc}") from exc


def interpreter_for(lang: str) -> tuple[str, str]:
    """upstream ``interpreter_for`` (+ ``bun``): (interpreter, script extension). Any other ``lang`` must
    be an absolute interpreter path (upstream takes any string; a bare word is almost always a
    typo, so we say so)."""
    table = {"node": ("node", "js"), "js": ("node", "js"), "javascript": ("node", "js"),
             "python": ("python3", "py"), "py": ("python3", "py"),
             "shell": ("/bin/sh", "sh"), "sh": ("/bin/sh", "sh"), "bash": ("/bin/sh", "sh"),
             "bun": ("bun", "ts")}  # ours: the catalog has a bun image
    if lang in table:
        return table[lang]
    if lang.startswith("/") and "\0" not in lang:
        return lang, "txt"
    raise sandbox_error(SCode.S001, f"invalid request: unknown lang {lang!r}; use node, "
                        "python, shell or an absolute interpreter path such as /usr/bin/perl")
