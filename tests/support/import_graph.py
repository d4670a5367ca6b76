"""Our import graph, read from the source with ``ast`` (nothing is imported or run).

Every import counts, the ones inside functions too: a lazy import that closes a circle is still
a circle, it only fails later. ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module of ours, else to ``pkg`` (the package's ``__init__`` runs either way, but a package's
module that imports a sibling this way does not depend on what ``__init__`` re-exports).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

OUR_PACKAGES = ("daemon", "client", "manifests", "vmm_ffi")


class ImportGraph:
    """Module → the modules (ours and others', by dotted name) it imports, with line numbers."""

    def __init__(self, root: Path, packages: Iterable[str] = OUR_PACKAGES) -> None:
        self.packages = tuple(packages)
        self.files = {
            _module_name(path.relative_to(root)): path
            for package in self.packages
            for path in sorted((root / package).rglob("*.py"))
        }
        self.imports = {module: list(self._read(module, path))
                        for module, path in self.files.items()}

    def ours(self, name: str) -> bool:
        return name.split(".")[0] in self.packages

    def edges(self, depth: int) -> dict[str, set[str]]:
        """Our modules grouped by their first ``depth`` name parts (``daemon.api``,
        ``client.protocol``, ``vmm_ffi.launcher``) → the groups they import."""
        graph: dict[str, set[str]] = {}
        for module, imported in self.imports.items():
            for target, _ in imported:
                if self.ours(target):
                    source, dest = _prefix(module, depth), _prefix(target, depth)
                    if source != dest:
                        graph.setdefault(source, set()).add(dest)
        return graph

    def _read(self, module: str, path: Path) -> Iterator[tuple[str, int]]:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                yield from ((alias.name, node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(package, node.level, node.module)
                modules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in self.files]
                if len(modules) < len(node.names):
                    yield base, node.lineno  # a name defined in ``base`` itself
                yield from ((module, node.lineno) for module in modules)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            if component:
                found.append(sorted([node, *component]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _module_name(relative: Path) -> str:
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(package: str, level: int, module: str | None) -> str:
    if not level:
        return module or ""
    parts = package.split(".")
    base = parts[: len(parts) - level + 1]
    return ".".join(base + ([module] if module else []))


def _prefix(module: str, depth: int) -> str:
    return ".".join(module.split(".")[:depth])
