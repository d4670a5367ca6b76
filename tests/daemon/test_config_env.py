"""SPEC §5 config flattening: table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.config.env import expand_vars, flatten_config
from daemon.errors import InvalidArgument

ENV = {"HOST": "db.local", "EMPTY": "", "PORT": "5432"}

FLATTEN = [
    ("plain string", {"mode": "fast"}, {"MODE": "fast"}),
    ("upper-cased keys", {"logLevel": "debug"}, {"LOGLEVEL": "debug"}),
    ("nested joined by _", {"db": {"host": "h", "pool": {"size": 5}}},
     {"DB_HOST": "h", "DB_POOL_SIZE": "5"}),
    ("int", {"port": 8080}, {"PORT": "8080"}),
    ("float", {"ratio": 0.5}, {"RATIO": "0.5"}),
    ("bool", {"debug": True, "quiet": False}, {"DEBUG": "true", "QUIET": "false"}),
    ("null", {"nothing": None}, {"NOTHING": "null"}),
    ("list JSON", {"hosts": ["a", 1, True]}, {"HOSTS": '["a",1,true]'}),
    ("list of maps JSON", {"routes": [{"p": "/"}]}, {"ROUTES": '[{"p":"/"}]'}),
    ("unicode kept", {"greeting": "héllo"}, {"GREETING": "héllo"}),
    ("empty mapping", {}, {}),
    ("empty nested mapping", {"a": {}}, {}),
    ("var", {"url": "postgres://${HOST}:${PORT}/x"}, {"URL": "postgres://db.local:5432/x"}),
    ("default unused", {"h": "${HOST:other}"}, {"H": "db.local"}),
    ("default used", {"h": "${MISSING:fallback}"}, {"H": "fallback"}),
    ("empty default", {"h": "${MISSING:}"}, {"H": ""}),
    ("default with colon", {"u": "${MISSING:http://x:1}"}, {"U": "http://x:1"}),
    ("set-but-empty wins", {"e": "${EMPTY:dflt}"}, {"E": ""}),
    ("var in list", {"l": ["${HOST}", 2]}, {"L": '["db.local",2]'}),
    ("escaped", {"lit": "$${HOST} costs $5"}, {"LIT": "${HOST} costs $5"}),
    ("single pass", {"x": "${LOOP}"}, {"X": "${HOST}"}),
    ("int keys", {1: "one"}, {"1": "one"}),
]


@pytest.mark.parametrize("config,expected", [(c, e) for _, c, e in FLATTEN],
                         ids=[i for i, _, _ in FLATTEN])
def test_flatten(config: dict[Any, Any], expected: dict[str, str]) -> None:
    env = dict(ENV, LOOP="${HOST}")
    assert flatten_config(config, environ=env, worker="w") == expected


def test_none_config_is_empty() -> None:
    assert flatten_config(None, environ={}, worker="w") == {}


ERRORS = [
    ("missing var", {"db": {"url": "${DB_URL}"}},
     "worker 'api': config key db.url uses ${DB_URL} but DB_URL is not set"),
    ("unterminated", {"x": "${HOST"}, "unterminated '${'"),
    ("bad name", {"x": "${1BAD}"}, "'${1BAD}' is not a variable reference"),
    ("empty name", {"x": "${}"}, "'${}' is not a variable reference"),
    ("collision", {"a_b": 1, "a": {"b": 2}}, "config keys a_b and a.b both become A_B"),
    ("case collision", {"key": 1, "KEY": 2}, "both become KEY"),
    ("empty key", {"": 1}, "cannot be an environment variable name"),
    ("key with =", {"a=b": 1}, "cannot be an environment variable name"),
    ("key with space", {"a b": 1}, "cannot be an environment variable name"),
]


@pytest.mark.parametrize("config,message", [(c, m) for _, c, m in ERRORS],
                         ids=[i for i, _, _ in ERRORS])
def test_errors_name_worker_and_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        flatten_config(config, environ=ENV, worker="api")
    assert message in str(info.value)
    assert "worker 'api'" in str(info.value)
    assert "\n" not in str(info.value)


def test_expand_vars_leaves_lone_dollars() -> None:
    assert expand_vars("$HOME and $ and $$", {}, worker="w", key="k") == "$HOME and $ and $$"
