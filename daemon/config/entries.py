"""config.yaml worker entries (SPEC §5): the typed entry, its kind, and the strict parser.

The parser reads the whole file with ruamel (round-trip mode, so line/column marks are known) and
checks only what the daemon owns: the top level must be a mapping, ``workers`` a sequence of
mappings, each with a ``name`` and at most one of ``worker_path`` / ``image``. Other top-level keys
belong to the engine and are never interpreted. Unknown keys inside an entry are tolerated (the
engine may define more) and preserved on write.

Every problem is one :class:`ConfigError` whose message is ``file:line:col: what is wrong``.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any

import msgspec
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from daemon.config.network import NetworkSetting, parse_network
from daemon.errors import ConfigError, InvalidArgument


class WorkerKind(enum.Enum):
    """The worker types of SPEC §5; values are the protocol's ``Worker.type`` strings."""

    LOCAL = "local"
    OCI = "oci"
    BINARY = "binary"
    CONFIG = "config"


class WorkerEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One ``workers:`` entry. ``config`` is the raw (unexpanded) ``config:`` mapping.

    Example::

        WorkerEntry(name="my-worker", worker_path="/home/u/my-project")
        WorkerEntry(name="hello", image="ghcr.io/org/hello:1")
    """

    name: str
    worker_path: str | None = None
    image: str | None = None
    config: dict[str, Any] | None = None
    watch: bool | None = None  # local workers: hot reload, on unless false
    network: Any = None  # the raw `network:` value, checked by daemon.config.network

    def kind(self, home: Path) -> WorkerKind:
        """Local (worker_path), OCI (image), Binary (an executable ``$III_HOME/workers/<name>``),
        else Config."""
        if self.worker_path is not None:
            return WorkerKind.LOCAL
        if self.image is not None:
            return WorkerKind.OCI
        binary = home / "workers" / self.name
        if binary.is_file() and os.access(binary, os.X_OK):
            return WorkerKind.BINARY
        return WorkerKind.CONFIG

    def to_yaml(self) -> dict[str, Any]:
        """The mapping written to config.yaml (absent fields left out), key order name first."""
        out: dict[str, Any] = {"name": self.name}
        if self.worker_path is not None:
            out["worker_path"] = self.worker_path
        if self.image is not None:
            out["image"] = self.image
        if self.watch is not None:
            out["watch"] = self.watch
        if self.config is not None:
            out["config"] = self.config
        if self.network is not None:
            out["network"] = self.network
        return out

    def network_setting(self) -> NetworkSetting | None:
        """The entry's parsed ``network:`` (None: the daemon's); ``InvalidArgument`` if bad."""
        if self.network is None:
            return None
        try:
            return parse_network(self.network, f"worker '{self.name}': network")
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None


def check_entry(entry: WorkerEntry) -> None:
    """Refuse an entry the parser would reject once written; raises InvalidArgument."""
    name = entry.name
    if not name.strip() or "/" in name or name.startswith(".") or "\n" in name:
        raise InvalidArgument(f"worker name {name!r} is invalid: use letters, digits, '.', '_', '-'")
    for key, value in (("worker_path", entry.worker_path), ("image", entry.image)):
        if value is not None and not value.strip():
            raise InvalidArgument(f"worker '{name}': {key} must not be empty")
    if entry.worker_path is not None and entry.image is not None:
        raise InvalidArgument(f"worker '{name}' cannot have both worker_path and image")
    entry.network_setting()


class ParsedConfig(msgspec.Struct, frozen=True):
    """A parsed config.yaml: the round-trip document (None for an empty file) and its entries."""

    document: Any
    entries: list[WorkerEntry]


def new_yaml() -> YAML:
    """A round-trip YAML instance configured the one way this package uses it."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long paths or values
    return yaml


def plain(value: Any) -> Any:
    """ruamel's commented containers → plain dicts/lists (scalars as their Python types)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str(value)  # drop ruamel's quoted-scalar subclasses
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


def _mark(node: Any, key: Any | None = None, index: int | None = None) -> tuple[int, int] | None:
    """1-based (line, col) of a key or item inside a commented container, if ruamel knows it."""
    try:
        if key is not None:
            line, col = node.lc.key(key)
        elif index is not None:
            line, col = node.lc.item(index)
        else:
            line, col = node.lc.line, node.lc.col
    except (AttributeError, KeyError, IndexError, TypeError):
        return None
    return line + 1, col + 1


def _fail(file: str, mark: tuple[int, int] | None, problem: str) -> ConfigError:
    return ConfigError(file, mark[0] if mark else None, mark[1] if mark else None, problem)


def load_yaml(text: str, file: str) -> Any:
    """Round-trip parse of a YAML document (duplicate keys refused): the one place ruamel's
    errors become ours, a :class:`ConfigError` naming ``file:line:column`` and the problem."""
    try:
        return new_yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        pos = (mark.line + 1, mark.column + 1) if mark is not None else None
        raise _fail(file, pos, f"invalid YAML: {problem}") from exc
    except (YAMLError, ValueError) as exc:
        raise ConfigError(file, None, None, f"invalid YAML: {exc}") from exc


def parse_config(text: str, file: str) -> ParsedConfig:
    """Parse config.yaml text; raise :class:`ConfigError` on bad YAML or a bad ``workers`` shape."""
    document = load_yaml(text, file)
    if document is None:
        return ParsedConfig(None, [])
    if not isinstance(document, CommentedMap):
        raise _fail(file, (1, 1), "the top level must be a mapping (with a `workers:` list)")
    workers = document.get("workers")
    if workers is None:
        return ParsedConfig(document, [])
    if not isinstance(workers, CommentedSeq):
        raise _fail(file, _mark(document, key="workers"),
                    "`workers` must be a list of entries like `- name: my-worker`")
    entries: list[WorkerEntry] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(workers):
        where = _mark(workers, index=index)
        label = f"workers[{index}]"
        if not isinstance(item, CommentedMap):
            raise _fail(file, where, f"{label} must be a mapping with a `name`")
        entry = _parse_entry(item, label, file, where)
        if entry.name in seen:
            raise _fail(file, _mark(item, key="name"),
                        f"{label}.name '{entry.name}' duplicates workers[{seen[entry.name]}];"
                        " worker names must be unique")
        seen[entry.name] = index
        entries.append(entry)
    return ParsedConfig(document, entries)


def _parse_entry(item: CommentedMap, label: str, file: str,
                 where: tuple[int, int] | None) -> WorkerEntry:
    name = item.get("name")
    if "name" not in item:
        raise _fail(file, where, f"{label} has no `name`")
    if not isinstance(name, str) or not name.strip() or "/" in name or name.startswith("."):
        raise _fail(file, _mark(item, key="name"),
                    f"{label}.name must be a non-empty string without '/' (got {name!r})")
    fields: dict[str, str | None] = {}
    for key in ("worker_path", "image"):
        value = item.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise _fail(file, _mark(item, key=key),
                        f"{label}.{key} must be a non-empty string (got {plain(value)!r})")
        fields[key] = None if value is None else str(value)
    if fields["worker_path"] is not None and fields["image"] is not None:
        raise _fail(file, _mark(item, key="image"),
                    f"{label} has both `worker_path` and `image`; keep one")
    config = item.get("config")
    if config is not None and not isinstance(config, CommentedMap):
        raise _fail(file, _mark(item, key="config"), f"{label}.config must be a mapping")
    watch = item.get("watch")
    if watch is not None and not isinstance(watch, bool):
        raise _fail(file, _mark(item, key="watch"),
                    f"{label}.watch must be true or false (got {plain(watch)!r})")
    network = item.get("network")
    if network is not None:
        try:
            parse_network(plain(network), f"{label}.network")
        except ValueError as exc:
            raise _fail(file, _mark(item, key="network"), str(exc)) from None
    return WorkerEntry(name=str(name), worker_path=fields["worker_path"], image=fields["image"],
                       config=None if config is None else plain(config), watch=watch,
                       network=None if network is None else plain(network))
