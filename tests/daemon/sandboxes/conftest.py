from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.sandboxes.layout import SandboxLayout
from daemon.sandboxes.procinfo import read_pid_record
from daemon.sandboxes.provision import Provisioner
from tests.support.rootfs import make_busybox_rootfs


@pytest.fixture(scope="session")
def busybox_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cached image rootfs (read-only lower of every overlay sandbox in these tests)."""
    return make_busybox_rootfs(tmp_path_factory.mktemp("image") / "rootfs")


@pytest.fixture
def layout(iii_home: Path) -> Iterator[SandboxLayout]:
    lay = SandboxLayout(iii_home, "calc")
    yield lay
    # Teardown: never leave a launcher behind, whatever the test did.
    rec = read_pid_record(lay.pid_file)
    if rec is not None:
        try:
            os.kill(rec.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(rec.pid, 0)
        except ChildProcessError:
            pass


@pytest.fixture
def provisioner(iii_home: Path) -> Provisioner:
    return Provisioner(iii_home)
