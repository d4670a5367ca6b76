"""config.yaml store: round-trip fidelity, --force semantics, broken files, watcher, concurrency."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from daemon.config.entries import WorkerEntry, WorkerKind, parse_config
from daemon.config.store import ConfigChange, ConfigStore
from daemon.errors import AlreadyExists, ConfigError, InvalidArgument, InvalidState, NotFound
from tests.support.wait import async_wait_until

ROOT = Path(__file__).resolve().parents[2]

SAMPLE = textwrap.dedent("""\
    # iii engine config: shared with the engine
    port: 49134   # engine port
    modules:
        - class: modules::api::RestApiModule
          config:
            port: 3111
    workers:
      # my python worker
      - name: alpha
        worker_path: /src/alpha   # local project
      # a container worker
      - name: beta
        image: ghcr.io/org/beta:1
        config:
          api_key: "${API_KEY}"   # from the env
          retries: 3
      # engine builtin
      - name: iii-http

    # the end
    logging: {level: info}
""")


def store_at(tmp: Path, text: str | None = SAMPLE) -> ConfigStore:
    path = tmp / "config.yaml"
    if text is not None:
        path.write_text(text)
    return ConfigStore(path, tmp)


def outside_workers(text: str) -> list[str]:
    """The file's lines that are not inside the workers: list."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("workers:"):
            inside = True
            continue
        if inside and line and not line.startswith(" "):
            inside = False
        if not inside:
            lines.append(line)
    return lines


def test_load_types_and_kinds(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    (tmp_path / "workers").mkdir()
    binary = tmp_path / "workers" / "iii-http"
    binary.write_text("#!/bin/sh\n")
    entries = store.load()
    assert [e.name for e in entries] == ["alpha", "beta", "iii-http"]
    assert entries[1] == WorkerEntry(name="beta", image="ghcr.io/org/beta:1",
                                     config={"api_key": "${API_KEY}", "retries": 3})
    assert entries[0].kind(store.home) is WorkerKind.LOCAL
    assert entries[1].kind(store.home) is WorkerKind.OCI
    assert entries[2].kind(store.home) is WorkerKind.CONFIG  # not executable yet
    binary.chmod(0o755)
    assert entries[2].kind(store.home) is WorkerKind.BINARY
    assert store.get("beta") is entries[1] or store.get("beta") == entries[1]
    assert store.find("nope") is None
    with pytest.raises(NotFound, match="worker 'nope' not found"):
        store.get("nope")


def test_missing_or_empty_file_is_no_workers(tmp_path: Path) -> None:
    assert store_at(tmp_path, None).load() == []
    assert store_at(tmp_path, "").load() == []
    assert store_at(tmp_path, "# nothing yet\n").load() == []
    assert store_at(tmp_path, "workers:\n").load() == []
    assert store_at(tmp_path, "port: 1\nworkers: []\n").load() == []


BAD = [
    ("workers:\n  - name: a\n   bad: [\n", 3, "invalid YAML"),
    ("- a\n- b\n", 1, "top level must be a mapping"),
    ("workers: {name: a}\n", 1, "`workers` must be a list"),
    ("workers:\n  - just-a-string\n", 2, "workers[0] must be a mapping"),
    ("workers:\n  - worker_path: /x\n", 2, "workers[0] has no `name`"),
    ("workers:\n  - name: 42\n", 2, "workers[0].name must be a non-empty string"),
    ("workers:\n  - name: a\n    image: [1]\n", 3, "workers[0].image must be a non-empty string"),
    ("workers:\n  - name: a\n    worker_path: /p\n    image: x\n", 4, "both `worker_path`"),
    ("workers:\n  - name: a\n    config: [1, 2]\n", 3, "workers[0].config must be a mapping"),
    ("workers:\n  - name: a\n  - name: a\n", 3, "duplicates workers[0]"),
    ("workers:\n  - name: a\n    network: open\n", 3,
     "workers[0].network: 'open' is not a network policy; use one of none, engine, egress"),
    ("workers:\n  - name: a\n    network: {allow: [10.0.0.0/33]}\n", 3,
     "workers[0].network.allow[0]: '10.0.0.0/33' is not an IP address or CIDR"),
    ("workers:\n  - name: a\n    network: {policy: host, deny: [10.0.0.0/8]}\n", 3,
     "workers[0].network: allow/deny need a network namespace of the sandbox's own"),
]


@pytest.mark.parametrize("text,line,problem", BAD, ids=[b[2] for b in BAD])
def test_bad_files_give_one_line_with_position(tmp_path: Path, text: str, line: int,
                                               problem: str) -> None:
    store = store_at(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        store.load()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'config.yaml'}:{line}:")
    assert problem in message
    assert isinstance(info.value, InvalidState)
    assert info.value.data()["line"] == line


async def test_add_remove_keep_everything_else(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.load()
    written = await store.add(WorkerEntry(name="gamma", worker_path="/src/gamma",
                                          config={"db": {"url": "x"}}))
    assert written.name == "gamma"
    text = (tmp_path / "config.yaml").read_text()
    assert outside_workers(text) == outside_workers(SAMPLE)
    assert "  # engine builtin\n  - name: iii-http\n  - name: gamma\n" in text
    assert "      api_key: \"${API_KEY}\"   # from the env\n" in text
    assert [e.name for e in store.load()] == ["alpha", "beta", "iii-http", "gamma"]

    removed = await store.remove("beta")
    assert removed.image == "ghcr.io/org/beta:1"
    text = (tmp_path / "config.yaml").read_text()
    assert "a container worker" not in text and "beta" not in text
    assert "# my python worker" in text and "# engine builtin" in text
    assert outside_workers(text) == outside_workers(SAMPLE)
    assert [e.name for e in store.snapshot()] == ["alpha", "iii-http", "gamma"]

    for name in ("alpha", "iii-http", "gamma"):
        await store.remove(name)
    text = (tmp_path / "config.yaml").read_text()
    assert "workers: []\n" in text
    assert outside_workers(text) == outside_workers(SAMPLE)
    assert store.load() == []
    await store.add(WorkerEntry(name="again", image="busybox"))
    assert [e.name for e in store.load()] == ["again"]
    assert outside_workers((tmp_path / "config.yaml").read_text()) == outside_workers(SAMPLE)


async def test_add_to_missing_file_creates_it(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "sub" / "config.yaml", tmp_path)
    await store.add(WorkerEntry(name="w", worker_path="/p"))
    assert (tmp_path / "sub" / "config.yaml").read_text() == \
        "workers:\n  - name: w\n    worker_path: /p\n"
    assert not list((tmp_path / "sub").glob(".*.tmp"))


async def test_flow_style_list_falls_back_to_round_trip(tmp_path: Path) -> None:
    store = store_at(tmp_path, "# keep me\nport: 1\nworkers: [{name: a}]\n")
    await store.add(WorkerEntry(name="b", image="x/y"))
    text = (tmp_path / "config.yaml").read_text()
    assert "# keep me" in text and "port: 1" in text
    assert [e.name for e in store.load()] == ["a", "b"]


async def test_existing_name_needs_force(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    before = (tmp_path / "config.yaml").read_text()
    with pytest.raises(AlreadyExists, match=r"^worker 'beta' already exists; use --force$"):
        await store.add(WorkerEntry(name="beta", image="other"))
    assert (tmp_path / "config.yaml").read_text() == before


async def test_force_keeps_config_and_reset_drops_it(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    written = await store.add(WorkerEntry(name="beta", worker_path="/src/beta"), force=True)
    assert written == WorkerEntry(name="beta", worker_path="/src/beta",
                                  config={"api_key": "${API_KEY}", "retries": 3})
    text = (tmp_path / "config.yaml").read_text()
    assert "# from the env" in text and "ghcr.io/org/beta" not in text
    assert "  - name: beta\n    worker_path: /src/beta\n    config:\n" in text

    await store.add(WorkerEntry(name="alpha", worker_path="/src/alpha2"), force=True)
    assert "    worker_path: /src/alpha2  # local project\n" in \
        (tmp_path / "config.yaml").read_text()
    assert store.load()[1] == written

    written = await store.add(WorkerEntry(name="beta", image="ghcr.io/org/beta:2"), force=True,
                              reset_config=True)
    assert written == WorkerEntry(name="beta", image="ghcr.io/org/beta:2")
    assert store.load()[1] == written
    assert [e.name for e in store.load()] == ["alpha", "beta", "iii-http"]

    written = await store.add(WorkerEntry(name="beta", image="b:3", config={"k": "v"}),
                              force=True, reset_config=True)
    assert store.load()[1] == written == WorkerEntry(name="beta", image="b:3", config={"k": "v"})
    assert outside_workers((tmp_path / "config.yaml").read_text()) == outside_workers(SAMPLE)


async def test_broken_file_is_never_overwritten(tmp_path: Path) -> None:
    broken = SAMPLE.replace("  - name: beta\n", "  - name: beta\n   oops: [\n")
    store = store_at(tmp_path, broken)
    with pytest.raises(ConfigError, match=r"config\.yaml:\d+:\d+: invalid YAML"):
        await store.add(WorkerEntry(name="new"))
    with pytest.raises(ConfigError):
        await store.remove("alpha")
    assert (tmp_path / "config.yaml").read_text() == broken


async def test_symlinked_config_is_edited_in_place(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "iii.yaml"
    real.parent.mkdir()
    real.write_text(SAMPLE)
    (tmp_path / "config.yaml").symlink_to(real)
    store = ConfigStore(tmp_path / "config.yaml", tmp_path)
    await store.add(WorkerEntry(name="z"))
    assert (tmp_path / "config.yaml").is_symlink()
    assert "- name: z" in real.read_text()


async def test_file_mode_is_kept(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    (tmp_path / "config.yaml").chmod(0o600)
    await store.add(WorkerEntry(name="z"))
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == 0o600


async def test_watcher_reports_hand_edits_not_own_writes(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.load()
    changes: list[ConfigChange] = []

    async def on_change(change: ConfigChange) -> None:
        changes.append(change)

    path = tmp_path / "config.yaml"
    async with asyncio.TaskGroup() as tg:
        store.listen(on_change)
        task = tg.create_task(store.watch(interval=0.05))
        await store.add(WorkerEntry(name="own", worker_path="/own"))
        await store.remove("alpha")
        assert await store.poll() is None  # own writes are not hand edits
        assert changes == []

        text = path.read_text().replace("image: ghcr.io/org/beta:1", "image: ghcr.io/org/beta:9")
        text = text.replace("  - name: iii-http\n", "") + "extra: 1\n"
        text = text.replace("workers:\n", "workers:\n  - name: by-hand\n    worker_path: /h\n")
        path.write_text(text)
        await async_wait_until(lambda: asyncio.sleep(0, changes), 5, "hand edit reported")
        change = changes.pop()
        assert [e.name for e in change.added] == ["by-hand"]
        assert [e.name for e in change.removed] == ["iii-http"]
        assert [(e.name, e.image) for e in change.changed] == [("beta", "ghcr.io/org/beta:9")]
        assert change.error is None

        # A hand edit just before one of our writes is still reported afterwards.
        path.write_text(path.read_text().replace("/h\n", "/h2\n"))
        await store.add(WorkerEntry(name="own2"))
        await async_wait_until(lambda: asyncio.sleep(0, changes), 5, "edit before a write")
        assert [(e.name, e.worker_path) for e in changes.pop().changed] == [("by-hand", "/h2")]

        good = path.read_text()
        path.write_text(good + "workers2: [\n")
        await async_wait_until(lambda: asyncio.sleep(0, changes), 5, "broken file reported")
        broken = changes.pop()
        assert broken.error is not None and "invalid YAML" in str(broken.error)
        assert await store.poll() is None  # reported once per broken version
        with pytest.raises(ConfigError):
            await store.add(WorkerEntry(name="refused"))
        assert "refused" not in path.read_text()
        assert [e.name for e in store.snapshot()] == ["by-hand", "beta", "own", "own2"]

        path.write_text(good.replace("  - name: own2\n", ""))
        await async_wait_until(lambda: asyncio.sleep(0, changes), 5, "fixed file reported")
        fixed = changes.pop()
        assert fixed.error is None and [e.name for e in fixed.removed] == ["own2"]
        task.cancel()


async def test_concurrent_tasks_keep_file_valid(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    names = [f"w{i}" for i in range(20)]

    async def churn(name: str) -> None:
        await store.add(WorkerEntry(name=name, worker_path=f"/p/{name}"))
        if name[-1] in "02468":
            await store.remove(name)

    await asyncio.gather(*(churn(n) for n in names))
    text = (tmp_path / "config.yaml").read_text()
    expected = ["alpha", "beta", "iii-http"] + [n for n in names if n[-1] not in "02468"]
    assert sorted(e.name for e in parse_config(text, "c").entries) == sorted(expected)
    assert outside_workers(text) == outside_workers(SAMPLE)
    assert "# my python worker" in text and "# engine builtin" in text


CHURN = """
import asyncio, sys
from pathlib import Path
from daemon.config.store import ConfigStore, WorkerEntry

async def main(path, name):
    store = ConfigStore(Path(path), Path(path).parent)
    for round in range(3):
        await store.add(WorkerEntry(name=name, worker_path="/p/" + name), force=True)
        await store.remove(name)
    await store.add(WorkerEntry(name=name, image="img/" + name))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_concurrent_processes_keep_file_valid(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(SAMPLE)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    names = [f"p{i}" for i in range(20)]
    procs = [subprocess.Popen([sys.executable, "-c", CHURN, str(path), n], env=env,
                              stderr=subprocess.PIPE, text=True) for n in names]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    text = path.read_text()
    entries = parse_config(text, str(path)).entries
    assert sorted(e.name for e in entries) == sorted(["alpha", "beta", "iii-http", *names])
    assert all(e.image == f"img/{e.name}" for e in entries if e.name.startswith("p"))
    assert outside_workers(text) == outside_workers(SAMPLE)
    assert "# a container worker" in text
    assert not list(tmp_path.glob(".config.yaml.*.tmp"))


LAYOUTS = [
    ("crlf line endings", "a: 1\r\nworkers:\r\n  - name: x\r\n    image: i\r\nb: 2\r\n"),
    ("dashes at column 0", "workers:\n# c0\n- name: x\n  image: i\n- name: y\nz: 1\n"),
    ("indent 4", "engine:\n    port: 1\nworkers:\n    -   name: x\n        image: i\n"),
    ("document markers", "---\nworkers:  # mine\n  - name: x\n...\n"),
    ("empty list with comment", "workers:   # none yet\n# next\nother: 1\n"),
    ("empty flow list", "workers: []  # none yet\nother: 1\n"),
    ("no workers key", "# engine only\nport: 1\n"),
    ("quoted key and values", "'workers':\n  - name: \"x\"\n    image: 'i:1'\n"),
]


@pytest.mark.parametrize("text", [t for _, t in LAYOUTS], ids=[i for i, _ in LAYOUTS])
async def test_add_then_remove_restores_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(text.encode())
    store = ConfigStore(path, tmp_path)
    before = [e.name for e in store.load()]
    await store.add(WorkerEntry(name="new", worker_path="/n", config={"a": {"b": [1, "x"]}}))
    added = path.read_bytes().decode()
    assert [e.name for e in parse_config(added, "c").entries] == before + ["new"]
    assert ("\r\n" in text) == ("\r\n" in added) and ("\r\n" not in text or "\n" not in
                                                     added.replace("\r\n", ""))
    await store.remove("new")
    after = path.read_bytes().decode()
    if before:
        assert after == text
    else:  # the list stays, empty, as `workers: []` (keeping a comment on that line)
        assert after.replace("workers: []", "workers:").replace("workers:\n", "") == \
            text.replace("workers: []", "workers:").replace("workers:\n", "")


async def test_entries_that_could_not_be_read_back_are_refused(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    before = (tmp_path / "config.yaml").read_text()
    for bad in (WorkerEntry(name="a/b"), WorkerEntry(name=".hidden"), WorkerEntry(name=" "),
                WorkerEntry(name="x", worker_path="/p", image="i"),
                WorkerEntry(name="x", image="")):
        with pytest.raises(InvalidArgument):
            await store.add(bad)
    with pytest.raises(InvalidArgument, match="--reset-config only works together with --force"):
        await store.add(WorkerEntry(name="alpha", worker_path="/x"), reset_config=True)
    assert (tmp_path / "config.yaml").read_text() == before


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").mkdir()
    with pytest.raises(ConfigError, match="config.yaml: cannot be read"):
        ConfigStore(tmp_path / "config.yaml", tmp_path).load()
    (tmp_path / "config.yaml").rmdir()
    (tmp_path / "config.yaml").write_bytes(b"workers:\n  - name: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        ConfigStore(tmp_path / "config.yaml", tmp_path).load()


async def test_poll_without_file_and_after_deletion(tmp_path: Path) -> None:
    store = store_at(tmp_path, None)
    assert store.load() == [] and await store.poll() is None
    await store.add(WorkerEntry(name="w", image="i"))
    assert await store.poll() is None
    (tmp_path / "config.yaml").unlink()
    change = await store.poll()
    assert change is not None and [e.name for e in change.removed] == ["w"]
    assert store.snapshot() == [] and await store.poll() is None
