"""How values from a manifest are shown inside one-line error messages."""

from __future__ import annotations

import datetime

from ruamel.yaml.scalarbool import ScalarBoolean

_MAX_SHOWN = 60


def describe(value: object) -> str:
    """A short, one-line rendering of a YAML value: ``'lots'``, ``-5``, ``true``, ``a list``.

    Strings are quoted with ``repr`` (so newlines and control characters stay visible) and cut
    to keep the message on one readable line.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, ScalarBoolean):
        return "true" if bool(value) else "false"
    if isinstance(value, str):
        text = str(value)
        shown = repr(text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "...")
        return shown
    if isinstance(value, (int, float)):
        text = repr(int(value) if isinstance(value, int) else float(value))
        return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"the date {value.isoformat()} (quote it to make it a string)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple, set, frozenset)):
        return "a list"
    return f"a value of type {type(value).__name__}"


def is_bool(value: object) -> bool:
    """True for YAML booleans. ruamel's round-trip loader returns ``ScalarBoolean`` (an ``int``
    subclass, not ``bool``) for anchored booleans: it must never pass as an integer."""
    return isinstance(value, (bool, ScalarBoolean))
