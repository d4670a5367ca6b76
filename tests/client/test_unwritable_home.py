"""An III_HOME that cannot be written is one ``error:`` line naming it, never a traceback.

A read-only tmpfs in a private mount namespace makes the home unwritable for root too (a mode
bit would not stop root, and CI runs as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
TIMEOUT = 60


def run_with_readonly_dir(mount_point: Path, argv: list[str],
                          env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) is not installed")
    script = 'mount -t tmpfs -o ro tmpfs "$1" && shift && exec "$@"'
    return subprocess.run([unshare, "--user", "--map-root-user", "--mount", "sh", "-c", script,
                           "sh", str(mount_point), *argv], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)


@pytest.mark.parametrize("argv", [
    ["iii", "worker", "list"],
    ["iii", "worker", "add", "iii-http"],
    ["iii", "daemon", "run"],
], ids=["list", "add", "daemon-run"])
def test_unwritable_home_is_one_error_line(tmp_path: Path, argv: list[str]) -> None:
    readonly = tmp_path / "ro"
    readonly.mkdir()
    home = readonly / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    env["III_HOME"] = str(home)
    out = run_with_readonly_dir(readonly, [str(BIN / argv[0]), *argv[1:]], env)
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = out.stderr.splitlines()
    assert lines[0].startswith("error: ") and str(home) in lines[0], out.stderr
    assert "Traceback" not in out.stderr and "─" not in out.stderr
    assert all(ln.startswith(("error: ", "hint: ")) for ln in lines), out.stderr
