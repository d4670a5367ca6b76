"""The set-up's own promises: the package probe of ``make setup`` as a normal user, and the
dependency lock that ``make setup`` installs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from client import scaffold

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534
# What login(1) gives a normal user on Debian: no /usr/sbin, no /sbin.
NORMAL_USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"


def locked_versions() -> dict[str, str]:
    """Package -> version for every lock entry whose environment marker holds here."""
    from packaging.markers import Marker

    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^ ;\\\n]+)(?: ; ([^\\\n]+))?",
                      (REPO / "requirements.lock").read_text(), re.MULTILINE)
    return {canonical(name): version for name, version, marker in pins
            if not marker or Marker(marker.strip()).evaluate()}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become a normal user (uid 65534)")
def test_the_package_probe_finds_sbin_tools_with_a_normal_users_path() -> None:
    # The probe reads only the Makefile: a copy that nobody may read (pytest's tmp_path is 0700).
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(REPO / "Makefile", Path(tmp, "Makefile"))
        os.chmod(tmp, 0o755)
        probe = run_probe_as_nobody(tmp)
    # `make test` ran the same probe as root first, so every package is installed: a normal
    # user's probe must agree, not ask for debootstrap or iptables-nft (both in /usr/sbin).
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert "missing" not in probe.stdout


def run_probe_as_nobody(makefile_dir: str) -> subprocess.CompletedProcess[str]:
    python = shutil.which("python3", path=NORMAL_USER_PATH)
    assert python is not None, "python3 is one of the Makefile's apt packages"
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         "make", "-s", "-C", makefile_dir, "apt", f"PYTHON={python}"],
        env={"PATH": NORMAL_USER_PATH, "HOME": "/nonexistent"}, capture_output=True, text=True,
        check=False,
        timeout=60)


def test_the_lock_pins_every_package_with_hashes() -> None:
    text = (REPO / "requirements.lock").read_text()
    requirements = [line for line in text.splitlines() if re.match(r"^[A-Za-z0-9]", line)]
    assert requirements and all("==" in line for line in requirements), requirements
    assert text.count("--hash=sha256:") >= len(requirements)


def test_the_venv_holds_exactly_what_the_lock_says() -> None:
    from importlib.metadata import distributions

    installed = {canonical(d.metadata["Name"]): d.version for d in distributions()}
    installed.pop("iii-sandbox-workers")  # the project itself, installed editable
    installed.pop("pip")  # the venv's own installer
    assert installed == locked_versions()


def test_new_workers_pin_the_sdks_the_tests_run() -> None:
    # `iii worker init` writes exact SDK versions; the Python one is the lock's.
    assert scaffold.PYTHON_SDK == f"iii-sdk=={locked_versions()['iii-sdk']}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", scaffold.NODE_SDK)
    assert (REPO / "examples/python-worker/requirements.txt").read_text().strip() \
        == scaffold.PYTHON_SDK
