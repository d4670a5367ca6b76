from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.support.fixtures"]

TESTS = Path(__file__).resolve().parent
# Every test in these folders runs real daemons, images and engines: the slow tier, by folder so
# a marker cannot be forgotten. `make check` runs the rest (-m "not slow"); `make test` runs all.
SLOW_FOLDERS = frozenset({"e2e", "faults", "systemd"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.relative_to(TESTS).parts[0] in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def iii_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private III_HOME under a short path (Unix socket paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="iii-", dir="/tmp") as tmp:
        home = Path(tmp)
        monkeypatch.setenv("III_HOME", str(home))
        monkeypatch.delenv("III_CONFIG_PATH", raising=False)
        monkeypatch.delenv("III_SOCKET", raising=False)
        monkeypatch.setenv("III_NO_AUTOSTART", "1")
        yield home


@pytest.fixture(autouse=True)
def _never_touch_real_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Tests must never see the developer's ~/.iii or ~/.docker.
    if "III_HOME" not in os.environ:
        monkeypatch.setenv("III_HOME", str(tmp_path / "iii-home"))
