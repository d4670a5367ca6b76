from __future__ import annotations

import fcntl
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


# `make test` runs tests in parallel (pytest-xdist). A test that changes what the whole host
# shares (/etc/subuid) or needs the machine to itself (a fork bomb, a cpu quota measured against
# the clock) is marked `host_exclusive`: it runs while no other test of this run does. Every test
# holds a shared flock on one file, an exclusive test an exclusive one.
HOST_LOCK = Path(tempfile.gettempdir()) / "iii-tests-host.lock"


@pytest.fixture(autouse=True)
def _host_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    exclusive = request.node.get_closest_marker("host_exclusive") is not None
    with HOST_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


@pytest.fixture
def iii_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private III_HOME under a short path (Unix socket paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="iii-", dir="/tmp") as tmp:
        home = Path(tmp)
        monkeypatch.setenv("III_HOME", str(home))
        monkeypatch.delenv("III_CONFIG_PATH", raising=False)
        monkeypatch.delenv("III_SOCKET", raising=False)
        yield home


@pytest.fixture(autouse=True)
def _never_touch_real_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Tests must never see the developer's ~/.iii or ~/.docker, nor start a daemon by the way
    # (one the CLI autostarts outlives the test): a test that wants autostart says so.
    if "III_HOME" not in os.environ:
        monkeypatch.setenv("III_HOME", str(tmp_path / "iii-home"))
    monkeypatch.setenv("III_NO_AUTOSTART", "1")
