"""The config.yaml store (SPEC §2, §5): typed entries, atomic single-writer edits, a hand-edit watcher.

- Only the ``workers:`` list is ever written (:mod:`daemon.config.text` splices it), so comments,
  key order, formatting and the engine's own top-level keys stay as the user left them.
- Writes are atomic (temp file in the same directory, fsync, rename, fsync of the directory) and
  serialised: an ``asyncio.Lock`` inside the process, an ``flock`` on ``config.yaml.lock`` across
  processes. Every write re-reads the file under the lock, so a concurrent writer's or a hand
  edit's entries are never lost.
- A file the daemon cannot parse is never overwritten: writes raise :class:`ConfigError` until it
  is fixed; the watcher reports it once per broken version.

The store keeps a *belief*: the entries the daemon last loaded, wrote or was told about by the
watcher. :meth:`ConfigStore.poll` reports the difference between the file and that belief, so the
store's own writes are never reported, while a hand edit made just before a write still is.

Example::

    store = ConfigStore(Path("~/.iii/config.yaml").expanduser(), home)
    entries = store.load()                      # at daemon start (raises ConfigError)
    await store.add(WorkerEntry(name="w", worker_path="/p"), force=False, reset_config=False)
    tg.create_task(store.watch(on_change))      # ConfigChange(added, removed, changed, error)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from daemon.config.entries import (
    WorkerEntry,
    WorkerKind,
    check_entry,
    parse_config,
)
from daemon.config.text import edit_workers
from daemon.errors import AlreadyExists, ConfigError, InvalidArgument, NotFound

__all__ = [
    "WATCH_INTERVAL_S",
    "ConfigChange",
    "ConfigError",
    "ConfigStore",
    "WorkerEntry",
    "WorkerKind",
]

log = logging.getLogger(__name__)

#: How often :meth:`ConfigStore.watch` looks at the file (SPEC §2: at most 1 s).
WATCH_INTERVAL_S = 0.5

_Signature = tuple[int, int, int, int] | None  # (mtime_ns, size, inode, device); None = missing


@dataclass(frozen=True)
class ConfigChange:
    """What a hand edit changed, relative to the store's belief; entries in file order.

    ``removed`` holds the entries as they were. When ``error`` is set the file is broken: the other
    fields are empty and the belief is unchanged until the file parses again.
    """

    added: list[WorkerEntry] = field(default_factory=list)
    removed: list[WorkerEntry] = field(default_factory=list)
    changed: list[WorkerEntry] = field(default_factory=list)
    error: ConfigError | None = None

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.error)


def diff_entries(old: list[WorkerEntry], new: list[WorkerEntry]) -> ConfigChange:
    """Entries added, removed and changed (same name, different fields) from ``old`` to ``new``."""
    before = {e.name: e for e in old}
    after = {e.name: e for e in new}
    return ConfigChange(
        added=[e for e in new if e.name not in before],
        removed=[e for e in old if e.name not in after],
        changed=[e for e in new if e.name in before and before[e.name] != e],
    )


def _signature(path: str) -> _Signature:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


class ConfigStore:
    """The daemon's only writer of config.yaml. Methods raise :class:`ConfigError` for a broken
    file, :class:`~daemon.errors.AlreadyExists` / :class:`~daemon.errors.NotFound` for names."""

    def __init__(self, path: Path, home: Path) -> None:
        self.path = path
        self.home = home
        self._lock = asyncio.Lock()
        self._belief: list[WorkerEntry] = []
        # Signature of the file version the belief was checked against; None forces a re-read.
        self._checked: _Signature | None = None
        self._reported_error: tuple[_Signature, str] | None = None
        # Why the file is unusable right now (None when it is fine): readers of the belief
        # say that what they show is the last good state.
        self.error: ConfigError | None = None
        self._listeners: list[Callable[[ConfigChange], Awaitable[None]]] = []

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    # -- reading ---------------------------------------------------------------------------------

    def _real_path(self) -> str:
        # A symlinked config.yaml (dotfiles) is edited where it points, never replaced by a file.
        return os.path.realpath(self.path)

    def _read(self) -> tuple[str, list[WorkerEntry], _Signature]:
        real = self._real_path()
        before = _signature(real)
        try:
            text = self._read_text(real)
        except FileNotFoundError:
            return "", [], None
        return text, parse_config(text, str(self.path)).entries, before

    def _read_text(self, real: str) -> str:
        """The file's text, line endings untouched; FileNotFoundError passes, other failures
        become ConfigError."""
        try:
            with open(real, encoding="utf-8", newline="") as fh:
                return fh.read()
        except FileNotFoundError:
            raise
        except UnicodeDecodeError as exc:
            raise ConfigError(str(self.path), None, None, f"not UTF-8 text ({exc.reason})") from exc
        except OSError as exc:
            raise ConfigError(str(self.path), None, None,
                              f"cannot be read: {exc.strerror or exc}") from exc

    def load(self) -> list[WorkerEntry]:
        """Read the file now (missing = no workers) and make it the store's belief."""
        try:
            _, entries, sig = self._read()
        except ConfigError as exc:
            self.error = exc
            raise
        self.error = None
        self._belief, self._checked = entries, sig
        return list(entries)

    def snapshot(self) -> list[WorkerEntry]:
        """The believed entries in file order (no I/O): cheap enough for every ``worker.list``."""
        return list(self._belief)

    def find(self, name: str) -> WorkerEntry | None:
        """The believed entry called ``name``, or None when there is none."""
        return next((e for e in self._belief if e.name == name), None)

    def get(self, name: str) -> WorkerEntry:
        """The believed entry called ``name``; raises NotFound."""
        entry = self.find(name)
        if entry is None:
            raise NotFound(f"worker '{name}' not found")
        return entry

    # -- writing ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _cross_process_lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _atomic_write(self, text: str) -> None:
        real = self._real_path()
        directory = os.path.dirname(real)
        try:
            mode = os.stat(real).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(real)}.",
                                   suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
                fh.flush()
                os.fchmod(fh.fileno(), mode)
                os.fsync(fh.fileno())
            os.replace(tmp, real)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _edit_sync(self, plan: Callable[[list[WorkerEntry]], _Plan]) -> WorkerEntry:
        with self._cross_process_lock():
            real = self._real_path()
            try:
                text = self._read_text(real)
            except FileNotFoundError:
                text = ""
            parsed = parse_config(text, str(self.path))  # a broken file is never overwritten
            step = plan(parsed.entries)
            new_text = edit_workers(text, parsed, str(self.path), step.expected, add=step.add,
                                    remove=step.remove, replace=step.replace)
            self._atomic_write(new_text)
            return step.result

    async def _edit(self, plan: Callable[[list[WorkerEntry]], _Plan],
                    believe: Callable[[list[WorkerEntry], WorkerEntry], list[WorkerEntry]]
                    ) -> WorkerEntry:
        async with self._lock:
            result = await asyncio.to_thread(self._edit_sync, plan)
            # The belief gets only our own edit; a hand edit made before it stays a difference the
            # watcher reports, because the next poll re-reads the file.
            self._belief = believe(self._belief, result)
            self._checked = None
            return result

    async def add(self, entry: WorkerEntry, *, force: bool = False,
                  reset_config: bool = False) -> WorkerEntry:
        """Register ``entry``; return what was written.

        An existing name raises AlreadyExists unless ``force``; with ``force`` the entry's
        ``worker_path`` / ``image`` are replaced in place and its ``config:`` is kept unless
        ``reset_config`` (then ``entry.config`` replaces it).
        """

        check_entry(entry)
        if reset_config and not force:
            raise InvalidArgument("--reset-config only works together with --force")

        def plan(entries: list[WorkerEntry]) -> _Plan:
            index = next((i for i, e in enumerate(entries) if e.name == entry.name), None)
            if index is None:
                return _Plan(entries + [entry], entry, add=entry)
            if not force:
                raise AlreadyExists(f"worker '{entry.name}' already exists; use --force")
            return _replace_plan(entries, index, entry, reset_config)

        return await self._edit(plan, _believe_written)

    async def remove(self, name: str) -> WorkerEntry:
        """Delete the entry called ``name`` (with its leading comment lines); return it.
        Raises NotFound."""

        def plan(entries: list[WorkerEntry]) -> _Plan:
            index = next((i for i, e in enumerate(entries) if e.name == name), None)
            if index is None:
                raise NotFound(f"worker '{name}' not found in {self.path}")
            return _Plan(entries[:index] + entries[index + 1:], entries[index], remove=index)

        return await self._edit(plan, lambda belief, gone: [e for e in belief if e.name != name])

    # -- watching --------------------------------------------------------------------------------

    def _poll_sync(self) -> tuple[ConfigChange | None, list[WorkerEntry] | None, _Signature]:
        sig = _signature(self._real_path())
        if sig is not None and sig == self._checked:
            return None, None, sig
        if sig is None and not self._belief and self._reported_error is None:
            return None, None, sig  # still no file, nothing believed
        try:
            _, entries, sig = self._read()
        except ConfigError as exc:
            self.error = exc
            key = (sig, str(exc))
            if self._reported_error == key:
                return None, None, sig
            self._reported_error = key
            return ConfigChange(error=exc), None, sig
        self._reported_error = self.error = None
        return diff_entries(self._belief, entries), entries, sig

    def listen(self, on_change: Callable[[ConfigChange], Awaitable[None]]) -> None:
        """Await ``on_change`` for every hand edit or broken version a :meth:`poll` finds."""
        self._listeners.append(on_change)

    async def poll(self) -> ConfigChange | None:
        """Look at the file once; return what changed by hand since the belief (None if
        nothing), after the listeners have seen it. A broken file gives
        ``ConfigChange(error=...)`` once per broken version."""
        async with self._lock:
            change, entries, sig = await asyncio.to_thread(self._poll_sync)
            if entries is not None:
                self._belief = entries
                self._checked = sig
        if not change:
            return None
        if change.error is not None:
            log.error("config.yaml is invalid and will not be written: %s", change.error)
        for listener in self._listeners:
            await listener(change)
        return change

    async def watch(self, *, interval: float = WATCH_INTERVAL_S) -> None:
        """:meth:`poll` every ``interval`` s (mtime, size, inode) forever. Run it in the
        daemon's TaskGroup; cancel to stop.

        Call :meth:`load` first: changes are relative to the belief, which starts empty (so
        without a load every existing entry would be reported as added). Deleting the file
        removes every entry."""
        while True:
            await self.poll()
            await asyncio.sleep(interval)


@dataclass(frozen=True)
class _Plan:
    """One write: the entries the file must hold afterwards, the entry to return, and the edit."""

    expected: list[WorkerEntry]
    result: WorkerEntry
    add: WorkerEntry | None = None
    remove: int | None = None
    replace: tuple[int, Callable[[CommentedMap], None]] | None = None


def _replace_plan(entries: list[WorkerEntry], index: int, entry: WorkerEntry,
                  reset_config: bool) -> _Plan:
    """``add --force`` of an existing name: new source, kept ``config:`` (unless reset)."""
    old = entries[index]
    config = entry.config if reset_config or old.config is None else old.config
    # `--force` keeps `watch: false`; `--force --no-watch` sets it.
    watch = False if entry.watch is False else old.watch
    written = WorkerEntry(name=entry.name, worker_path=entry.worker_path,
                          image=entry.image, config=config, watch=watch,
                          network=old.network)

    def edit(mapping: CommentedMap) -> None:
        _replace_source(mapping, entry, config, reset_config)

    expected = entries[:index] + [written] + entries[index + 1:]
    return _Plan(expected, written, replace=(index, edit))


def _replace_source(mapping: CommentedMap, entry: WorkerEntry, config: dict[str, Any] | None,
                    reset_config: bool) -> None:
    """Edit the entry's YAML mapping in place, so its comments and key order survive."""
    # The source key keeps its place (right after `name` when it changes kind).
    keys = list(mapping.keys())
    pos = next((keys.index(k) for k in ("worker_path", "image") if k in mapping),
               min(1, len(keys)))
    for key, value in (("worker_path", entry.worker_path), ("image", entry.image)):
        if value is None:
            mapping.pop(key, None)
        elif key in mapping:
            mapping[key] = value  # in place: its comment survives
        else:
            mapping.insert(pos, key, value)
    if reset_config:
        mapping.pop("config", None)
    if "config" not in mapping and config is not None:
        mapping["config"] = config
    if entry.watch is False:
        mapping["watch"] = False


def _believe_written(belief: list[WorkerEntry], written: WorkerEntry) -> list[WorkerEntry]:
    """The belief after our own write of ``written`` (replaced in place, else appended)."""
    if any(e.name == written.name for e in belief):
        return [written if e.name == written.name else e for e in belief]
    return belief + [written]
