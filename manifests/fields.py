"""Checking the parsed ``iii.worker.yaml`` mapping field by field (SPEC §3).

Each check reports at the YAML position of the offending value. What cannot be decided from
the manifest alone (is this package manager right for the detected kind?) is left to the
loader, with the position kept in :class:`ManifestFields`.
"""

from __future__ import annotations

import datetime
import difflib
import re
from typing import Any, NoReturn

import msgspec

from manifests.describe import describe, is_bool
from manifests.errors import ManifestError
from manifests.reference import InvalidReference, canonical_reference
from manifests.spec import (
    CPUS_RANGE,
    KINDS,
    MANIFEST_FILENAME,
    MEMORY_MIB_RANGE,
    RESERVED_ENV_KEYS,
    invalid_name_message,
    validate_worker_name,
)

KNOWN_KEYS: tuple[str, ...] = ("name", "runtime", "resources", "scripts", "env", "config")
# Keys real manifests (upstream templates) carry; accepted without a word.
ACCEPTED_KEYS: tuple[str, ...] = (
    "description", "version", "iii", "deploy", "manifest", "tags", "dependencies", "language",
    "bin", "type", "repo",
)
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "runtime": ("kind", "language", "package_manager", "entry", "base_image"),
    "resources": ("memory", "cpus"),
    "scripts": ("setup", "install", "start"),
}
LANGUAGE_DEPRECATED = "runtime.language is deprecated; rename it to runtime.kind"
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A config mapping is copied into config.yaml and JSON: cap its size (YAML aliases can make a
# 64 KiB file expand into billions of nodes).
MAX_CONFIG_NODES = 10_000

Position = tuple[int, int]


class ManifestFields(msgspec.Struct, kw_only=True):
    """What the manifest itself says; ``None`` = not set (to be detected or inferred)."""

    name: str | None = None
    kind: str | None = None
    package_manager: str | None = None
    package_manager_at: Position | None = None
    entry: str | None = None
    base_image: str | None = None
    memory: int | None = None
    cpus: int | None = None
    setup: str | None = None
    install: str | None = None
    start: str | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    warnings: list[str] = msgspec.field(default_factory=list)


def read_fields(root: Any) -> ManifestFields:
    """Check the document's top-level mapping and return its fields; raise ManifestError."""
    _require_mapping(root)
    fields = ManifestFields()
    _warn_unknown_keys(root, fields)
    _read_name(root, fields)
    _read_runtime(root, fields)
    _read_resources(root, fields)
    _read_scripts(root, fields)
    fields.env = _env(root, fields)
    fields.config = _config(root)
    return fields


def _require_mapping(root: Any) -> None:
    if not isinstance(root, dict):
        shown = "an empty file" if root is None else describe(root)
        raise ManifestError(
            MANIFEST_FILENAME, 1, 1,
            f"the manifest must be a mapping of keys (name, runtime, resources, scripts, env), "
            f"got {shown}",
        )


def _warn_unknown_keys(root: Any, fields: ManifestFields) -> None:
    for key in list(root):
        if isinstance(key, str) and (key in KNOWN_KEYS or key in ACCEPTED_KEYS):
            continue
        fields.warnings.append(_unknown_key_warning(root, key, "", KNOWN_KEYS))


def _read_name(root: Any, fields: ManifestFields) -> None:
    if "name" in root:
        # A missing name is the loader's call: `iii worker add --name` may supply it.
        name = root["name"]
        if not isinstance(name, str):
            _fail(root, "name", invalid_name_message("name", name))
        try:
            fields.name = validate_worker_name(str(name))
        except ManifestError:
            _fail(root, "name", invalid_name_message("name", name))


def _read_runtime(root: Any, fields: ManifestFields) -> None:
    runtime = _section(root, "runtime", fields)
    if "language" in runtime:
        fields.warnings.append(LANGUAGE_DEPRECATED)
    if "kind" in runtime:
        fields.kind = _choice(runtime, "kind", "runtime.kind", KINDS)
    elif "language" in runtime:
        fields.kind = _choice(runtime, "language", "runtime.language", KINDS)
    if "package_manager" in runtime:
        fields.package_manager = _string(runtime, "package_manager", "runtime.package_manager")
        fields.package_manager_at = value_position(runtime, "package_manager")
    if "entry" in runtime:
        fields.entry = _string(runtime, "entry", "runtime.entry")
    if "base_image" in runtime:
        fields.base_image = _base_image(runtime)


def _base_image(runtime: Any) -> str | None:
    image = _string(runtime, "base_image", "runtime.base_image")
    if image is None:
        return None
    try:
        return canonical_reference(image)
    except InvalidReference as exc:
        _fail(runtime, "base_image", f"runtime.base_image: {exc}")


def _read_resources(root: Any, fields: ManifestFields) -> None:
    resources = _section(root, "resources", fields)
    fields.memory = _integer(resources, "memory", "resources.memory", MEMORY_MIB_RANGE, " (MiB)")
    fields.cpus = _integer(resources, "cpus", "resources.cpus", CPUS_RANGE, "")


def _read_scripts(root: Any, fields: ManifestFields) -> None:
    scripts = _section(root, "scripts", fields)
    for script in SECTION_KEYS["scripts"]:
        if script in scripts:
            value = _string(scripts, script, f"scripts.{script}", allow_empty=True)
            setattr(fields, script, value)


def value_position(mapping: Any, key: Any) -> Position | None:
    """1-based (line, column) of ``mapping[key]``'s value, else of the key, else of the mapping."""
    lc = getattr(mapping, "lc", None)
    if lc is None:
        return None
    # An empty value (`key:`) has no token of its own: ruamel marks where the next one starts.
    try:
        empty = mapping[key] is None
    except (KeyError, TypeError):
        empty = True
    for getter in (lc.key, lc.value) if empty else (lc.value, lc.key):
        try:
            line, column = getter(key)
        except (KeyError, TypeError, AttributeError):
            continue
        if line is not None:
            return line + 1, column + 1
    if lc.line is not None:
        return lc.line + 1, lc.col + 1
    return None


def _fail(mapping: Any, key: Any, message: str) -> NoReturn:
    position = value_position(mapping, key)
    line, column = position if position is not None else (None, None)
    raise ManifestError(MANIFEST_FILENAME, line, column, message)


def _key_position(mapping: Any, key: Any) -> Position | None:
    lc = getattr(mapping, "lc", None)
    if lc is None:
        return None
    try:
        line, column = lc.key(key)
    except (KeyError, TypeError, AttributeError):
        return None
    return (int(line) + 1, int(column) + 1) if line is not None and column is not None else None


def _unknown_key_warning(mapping: Any, key: Any, prefix: str, known: tuple[str, ...]) -> str:
    shown = f"{prefix}{key}" if isinstance(key, str) else f"{prefix}{describe(key)}"
    text = f"unknown key {shown!r}" if isinstance(key, str) else f"unknown key {shown}"
    position = _key_position(mapping, key)
    if position is not None:
        text += f" at {MANIFEST_FILENAME}:{position[0]}:{position[1]}"
    text += " is ignored"
    if isinstance(key, str):
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
        if close:
            text += f" (did you mean {prefix + close[0]!r}?)"
    return text


def _section(root: Any, section: str, fields: ManifestFields) -> dict[Any, Any]:
    value = root.get(section)
    if value is None:
        return {}
    if not isinstance(value, dict):
        keys = ", ".join(SECTION_KEYS[section])
        _fail(root, section, f"{section} must be a mapping ({keys}), got {describe(value)}")
    for key in list(value):
        if not (isinstance(key, str) and key in SECTION_KEYS[section]):
            warning = _unknown_key_warning(value, key, f"{section}.", SECTION_KEYS[section])
            fields.warnings.append(warning)
    return value


def _string(mapping: Any, key: str, field: str, *, allow_empty: bool = False) -> str | None:
    """A string field; ``null`` means "not set"."""
    value = mapping[key]
    if value is None:
        return None
    if not isinstance(value, str):
        hint = " (quote it)" if isinstance(value, (int, float, datetime.date)) else ""
        _fail(mapping, key, f"{field} must be a string, got {describe(value)}{hint}")
    text = str(value)
    if "\x00" in text:
        _fail(mapping, key, f"{field} must not contain NUL characters")
    if not allow_empty and not text.strip():
        _fail(mapping, key, f"{field} must not be empty")
    return text


def _choice(mapping: Any, key: str, field: str, choices: tuple[str, ...]) -> str | None:
    value = _string(mapping, key, field)
    if value is None or value in choices:
        return value
    close = difflib.get_close_matches(value.lower(), choices, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    _fail(mapping, key, f"{field} must be one of {', '.join(choices)}, got {describe(value)}{hint}")


def _integer(
    mapping: Any, key: str, field: str, bounds: tuple[int, int], unit: str
) -> int | None:
    if key not in mapping or mapping[key] is None:
        return None
    value = mapping[key]
    # bool is an int in Python, but `memory: true` is not a size.
    if is_bool(value) or not isinstance(value, int):
        _fail(mapping, key, f"{field} must be a positive integer{unit}, got {describe(value)}")
    number = int(value)
    low, high = bounds
    if not low <= number <= high:
        _fail(mapping, key, f"{field} must be between {low} and {high}{unit}, got {describe(number)}")
    return number


def _env(root: Any, fields: ManifestFields) -> dict[str, str]:
    env = root.get("env")
    if env is None:
        return {}
    if not isinstance(env, dict):
        _fail(root, "env", f"env must be a mapping of NAME: value strings, got {describe(env)}")
    result: dict[str, str] = {}
    for key in list(env):
        if not isinstance(key, str) or not _ENV_KEY_RE.match(key):
            position = _key_position(env, key) or value_position(env, key)
            line, column = position if position is not None else (None, None)
            raise ManifestError(
                MANIFEST_FILENAME, line, column,
                f"env key {describe(key)} is not a valid variable name "
                "(letters, digits and '_', not starting with a digit)",
            )
        value = env[key]
        if not isinstance(value, str):
            hint = " (quote it)" if value is not None and not isinstance(value, (dict, list)) else ""
            _fail(env, key, f"env.{key} must be a string, got {describe(value)}{hint}")
        if "\x00" in value:
            _fail(env, key, f"env.{key} must not contain NUL characters")
        if key in RESERVED_ENV_KEYS:
            fields.warnings.append(
                f"env.{key} is reserved and set by the system; it is dropped from the manifest env"
            )
            continue
        result[key] = str(value)
    return result


def _config(root: Any) -> dict[str, Any]:
    config = root.get("config")
    if config is None:
        return {}
    if not isinstance(config, dict):
        _fail(root, "config", f"config must be a mapping, got {describe(config)}")
    budget = [MAX_CONFIG_NODES]
    plain = _plain(config, "config", budget, root, "config")
    assert isinstance(plain, dict)
    return plain


def _plain(value: Any, path: str, budget: list[int], owner: Any, key: Any) -> Any:
    """``value`` as plain JSON-able data (dict/list/str/int/float/bool/None)."""
    budget[0] -= 1
    if budget[0] < 0:
        _fail(owner, key, f"config is too large (more than {MAX_CONFIG_NODES} values)")
    if value is None or isinstance(value, bool):
        return value
    if is_bool(value):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for sub in list(value):
            if not isinstance(sub, str):
                _fail(value, sub, f"{path} keys must be strings, got {describe(sub)} (quote it)")
            result[str(sub)] = _plain(value[sub], f"{path}.{sub}", budget, value, sub)
        return result
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else list(value)
        return [_plain(item, f"{path}[]", budget, owner, key) for item in items]
    scalar = getattr(value, "value", None)  # ruamel TaggedScalar (`!custom text`)
    if isinstance(scalar, str):
        return str(scalar)
    _fail(owner, key, f"{path} holds an unsupported value ({describe(value)})")
