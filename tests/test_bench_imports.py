"""Every benchmark still imports: nothing else runs them, so a moved module would otherwise go
unnoticed until someone wants a figure (a split once left ``bench.lifecycle`` importing a name
that had moved)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
MODULES = sorted(m.name for m in pkgutil.iter_modules([str(BENCH)]) if not m.name.startswith("_"))


@pytest.mark.parametrize("name", MODULES)
def test_the_bench_imports(name: str) -> None:
    importlib.import_module(f"bench.{name}")
