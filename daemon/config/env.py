"""Flatten a worker's ``config:`` mapping into environment variables (SPEC §5).

Rules:

- keys are upper-cased; nested mappings are joined with ``_``:
  ``{"db": {"host": "h"}}`` → ``DB_HOST=h``;
- string values are used as they are (after expansion); every other value (numbers, booleans,
  null, lists) is JSON-encoded: ``5`` → ``5``, ``true`` → ``true``, ``[1, "a"]`` → ``[1,"a"]``;
- ``${VAR}`` and ``${VAR:default}`` inside strings (also strings inside lists) expand from the
  given environ, in one pass (an expanded value is not expanded again). A variable that is set,
  even to the empty string, wins over the default; ``$${`` is a literal ``${``;
- a missing variable without a default, an unterminated ``${``, a bad variable name, an empty key,
  a key that cannot be an environment name, or two keys that flatten to the same name raise
  :class:`~daemon.errors.InvalidArgument` naming the worker and the key.

Example::

    flatten_config({"port": 8080, "db": {"url": "${DB_URL:sqlite://}"}}, environ={}, worker="w")
    == {"PORT": "8080", "DB_URL": "sqlite://"}

Precedence against the manifest's ``env`` and the reserved ``III_*`` variables is decided by the
caller that builds the sandbox environment (SPEC §8), not here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from daemon.errors import InvalidArgument

__all__ = ["expand_vars", "flatten_config"]

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def expand_vars(value: str, environ: Mapping[str, str], *, worker: str, key: str) -> str:
    """Expand ``${VAR}`` / ``${VAR:default}`` in ``value``; raises InvalidArgument."""
    out: list[str] = []
    i = 0
    while True:
        start = value.find("$", i)
        if start < 0:
            out.append(value[i:])
            return "".join(out)
        out.append(value[i:start])
        if value.startswith("$${", start):
            out.append("${")
            i = start + 3
            continue
        if not value.startswith("${", start):
            out.append("$")
            i = start + 1
            continue
        end = value.find("}", start + 2)
        if end < 0:
            raise InvalidArgument(
                f"worker '{worker}': config key {key}: unterminated '${{' in {value!r}"
                " (write ${VAR} or ${VAR:default}, or $${ for a literal)")
        body = value[start + 2:end]
        name, sep, default = body.partition(":")
        if not _VAR_NAME.fullmatch(name):
            raise InvalidArgument(
                f"worker '{worker}': config key {key}: '${{{body}}}' is not a variable reference"
                " (names are letters, digits and '_')")
        if name in environ:
            out.append(environ[name])
        elif sep:
            out.append(default)
        else:
            raise InvalidArgument(
                f"worker '{worker}': config key {key} uses ${{{name}}} but {name} is not set"
                f" in the daemon's environment (set it, or write ${{{name}:default}})")
        i = end + 1


def _expand_nested(value: Any, environ: Mapping[str, str], worker: str, key: str) -> Any:
    if isinstance(value, str):
        return expand_vars(value, environ, worker=worker, key=key)
    if isinstance(value, list):
        return [_expand_nested(v, environ, worker, key) for v in value]
    if isinstance(value, dict):
        return {k: _expand_nested(v, environ, worker, key) for k, v in value.items()}
    return value


def flatten_config(config: Mapping[str, Any] | None, *, environ: Mapping[str, str],
                   worker: str) -> dict[str, str]:
    """The env vars a worker's ``config:`` gives it (see module doc); raises InvalidArgument."""
    result: dict[str, str] = {}
    origin: dict[str, str] = {}

    def walk(mapping: Mapping[Any, Any], prefix: str, dotted: str) -> None:
        for raw_key, value in mapping.items():
            key = str(raw_key)
            path = f"{dotted}.{key}" if dotted else key
            if not key or "=" in key or "\0" in key or any(c.isspace() for c in key):
                raise InvalidArgument(
                    f"worker '{worker}': config key {path!r} cannot be an environment variable"
                    " name (no empty keys, '=', spaces)")
            name = f"{prefix}_{key.upper()}" if prefix else key.upper()
            if isinstance(value, Mapping):
                walk(value, name, path)
                continue
            if name in result:
                raise InvalidArgument(
                    f"worker '{worker}': config keys {origin[name]} and {path} both become"
                    f" {name}; rename one")
            expanded = _expand_nested(value, environ, worker, path)
            result[name] = expanded if isinstance(expanded, str) else json.dumps(
                expanded, separators=(",", ":"), ensure_ascii=False)
            origin[name] = path

    walk(config or {}, "", "")
    return result
