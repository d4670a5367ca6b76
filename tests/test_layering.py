"""The layering, over the import graph read from the source (``tests/support/import_graph.py``).

Data flows one way: the CLI (``client``) → the wire (``client.protocol``) → the daemon →
{``manifests``, ``vmm_ffi``}. The wire is a leaf both sides share; lower layers never import
higher ones; no two packages, subpackages or modules import each other, however indirectly. ``make
lint`` (and so ``make check`` and ``make test``) runs this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.import_graph import ImportGraph, cycles

ROOT = Path(__file__).resolve().parents[1]
WIRE = "client.protocol"
# What the wire may import besides the standard library and itself: no typer, no rich.
WIRE_THIRD_PARTY = frozenset({"msgspec"})

# Of our packages, what each may import (besides itself).
ALLOWED = {
    "client": {"manifests", WIRE},
    "daemon": {"manifests", "vmm_ffi", WIRE},
    "manifests": set(),
    "vmm_ffi": set(),
}

# The daemon's parts, top to bottom: each imports only parts of a lower row. A part missing here
# fails the test; place it where its imports put it.
DAEMON_LAYERS = (
    ("daemon.__main__",),
    ("daemon.app",),  # builds the daemon from every part below
    ("daemon.api",),  # the socket and the engine bus: calls the services below
    ("daemon.ephemeral",),
    ("daemon.workers",),
    ("daemon.export", "daemon.engine"),
    ("daemon.sandboxes",),
    ("daemon.config",),
    ("daemon.images",),
    ("daemon", "daemon.trees", "daemon.background", "daemon.events", "daemon.notify",
     "daemon.errors"),
)


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return ImportGraph(ROOT)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def wire_violations(graph: ImportGraph) -> list[str]:
    found = []
    for module, imported in graph.imports.items():
        if not _within(module, WIRE):
            continue
        for target, line in imported:
            top = target.split(".")[0]
            if _within(target, WIRE) or top in sys.stdlib_module_names or top == "__future__":
                continue
            if top not in WIRE_THIRD_PARTY or graph.ours(target):
                found.append(f"{graph.files[module]}:{line} imports {target}")
    return found


def layer_violations(graph: ImportGraph) -> list[str]:
    found = []
    for module, imported in graph.imports.items():
        package = module.split(".")[0]
        if _within(module, WIRE):
            continue  # the leaf rule above
        for target, line in imported:
            if not graph.ours(target) or _within(target, package) and not _within(target, WIRE):
                continue
            if not any(_within(target, allowed) for allowed in ALLOWED[package]):
                found.append(f"{graph.files[module]}:{line} imports {target}")
    return found


def daemon_order_violations(graph: ImportGraph) -> list[str]:
    rank = {part: row for row, parts in enumerate(DAEMON_LAYERS) for part in parts}
    found = []
    for source, targets in sorted(graph.edges(2).items()):
        for target in sorted(targets):
            if source.split(".")[0] != "daemon" or not _within(target, "daemon"):
                continue
            if source not in rank or target not in rank:
                unplaced = source if source not in rank else target
                found.append(f"{unplaced} is not in DAEMON_LAYERS")
            elif rank[source] >= rank[target]:
                found.append(f"{source} imports {target}, which is not below it")
    return found


def test_the_wire_imports_only_itself_msgspec_and_the_standard_library(
        graph: ImportGraph) -> None:
    assert wire_violations(graph) == []


def test_each_package_imports_only_the_layers_below_it(graph: ImportGraph) -> None:
    assert layer_violations(graph) == []


def test_the_daemon_parts_import_only_lower_rows(graph: ImportGraph) -> None:
    assert daemon_order_violations(graph) == []


@pytest.mark.parametrize("depth", [2, 3, 99], ids=["packages", "subpackages", "modules"])
def test_no_two_packages_subpackages_or_modules_import_each_other(graph: ImportGraph,
                                                                  depth: int) -> None:
    # 2: daemon.api, client.commands, vmm_ffi.launcher; 3: daemon.workers.supervision; 99: each
    # module on its own
    assert cycles(graph.edges(depth)) == []


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    """A planted cycle, an arrow back up, a daemon reaching into the CLI, a wire importing
    rich and manifests importing the daemon are each reported."""
    files = {
        "daemon/__init__.py": "",
        "daemon/api/__init__.py": "",
        "daemon/api/rpc.py": "from daemon.workers import run\nfrom client.commands import app\n",
        "daemon/workers/__init__.py": "def run():\n    from daemon.api import rpc\n",
        "client/__init__.py": "",
        "client/commands.py": "from client.protocol.messages import Worker\n",
        "client/protocol/__init__.py": "",
        "client/protocol/messages.py": "import msgspec\nimport enum\nfrom rich import table\n",
        "manifests/__init__.py": "from daemon.api import rpc\n",
        "vmm_ffi/__init__.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    planted = ImportGraph(tmp_path)

    assert cycles(planted.edges(2)) == [["daemon.api", "daemon.workers"]]
    assert daemon_order_violations(planted) == ["daemon.workers imports daemon.api, which is not below it"]
    assert [v.split("/")[-1] for v in wire_violations(planted)] == ["messages.py:3 imports rich"]
    assert sorted(v.split(str(tmp_path) + "/")[-1] for v in layer_violations(planted)) == [
        "daemon/api/rpc.py:2 imports client.commands",
        "manifests/__init__.py:1 imports daemon.api.rpc",
    ]
