"""The namespace backend for a normal user: uid 65534 maps only itself, as root inside."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.rootfs import make_busybox_rootfs
from vmm_ffi.launch import launcher_python_path
from vmm_ffi.network import find_pasta
from vmm_ffi.params import LaunchParams, OverlayRoot, decode_result, encode, read_exit_status

NOBODY = 65534
RUN_TIMEOUT_S = 30


def as_nobody(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": launcher_python_path()}
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                           "--clear-groups", *argv], env=env, capture_output=True,
                          timeout=RUN_TIMEOUT_S, check=False, cwd="/", **kwargs)  # type: ignore


def interpreter_for_nobody() -> str | None:
    """A Python of this ABI that uid 65534 can run (the venv's may live under /root)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate in (sys.executable, f"/usr/bin/python{version}", "/usr/bin/python3"):
        if os.path.exists(candidate) and as_nobody(
                [candidate, "-S", "-c", "import msgspec, vmm_ffi.launcher"]).returncode == 0:
            return candidate
    return None


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A /tmp dir uid 65534 can traverse (pytest's own tmp dirs are root-only)."""
    path = Path(tempfile.mkdtemp(prefix="iii-nobody-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_unprivileged_user_gets_a_sandbox(open_dir: Path) -> None:
    python = interpreter_for_nobody()
    if python is None:
        pytest.skip("needs root, setpriv and a Python 3.11 that uid 65534 can run")
    lower = make_busybox_rootfs(open_dir / "image")
    for sub in ("upper", "work", "merged", "state"):
        (open_dir / sub).mkdir()
        os.chown(open_dir / sub, NOBODY, NOBODY)
    params = LaunchParams(
        name="nb", backend="namespace",
        rootfs=OverlayRoot(lower=[str(lower)], upper=str(open_dir / "upper"),
                           work=str(open_dir / "work")),
        merged=str(open_dir / "merged"), argv=["sh", "-c", "id -u; echo x > /made; hostname"],
        env={"PATH": "/bin"}, log_path=str(open_dir / "state/worker.log"),
        exit_path=str(open_dir / "state/exit.json"), hostname="nb-box")
    done = as_nobody([python, "-S", "-m", "vmm_ffi.launcher"], input=encode(params))
    assert done.returncode == 0, done.stderr.decode()
    assert decode_result(done.stdout.splitlines()[0]).backend == "namespace"
    log = (open_dir / "state/worker.log").read_text()
    assert "0\n" in log and "nb-box" in log  # root inside, own hostname
    made = open_dir / "upper/made"
    assert made.stat().st_uid == NOBODY  # ...but only nobody on the host
    assert read_exit_status((open_dir / "state/exit.json").read_bytes()).exit_code == 0


def test_unprivileged_user_gets_its_own_network_through_pasta(open_dir: Path) -> None:
    python = interpreter_for_nobody()
    pasta = find_pasta()
    if python is None or pasta is None:
        pytest.skip("needs root (to become uid 65534), setpriv, pasta and a usable Python")
    lower = make_busybox_rootfs(open_dir / "image")
    for sub in ("upper", "work", "merged", "state"):
        (open_dir / sub).mkdir()
        os.chown(open_dir / sub, NOBODY, NOBODY)
    params = LaunchParams(
        name="nb", backend="namespace", network="pasta", pasta=pasta,
        rootfs=OverlayRoot(lower=[str(lower)], upper=str(open_dir / "upper"),
                           work=str(open_dir / "work")),
        merged=str(open_dir / "merged"), argv=["readlink", "/proc/self/ns/net"],
        env={"PATH": "/bin"}, log_path=str(open_dir / "state/worker.log"),
        exit_path=str(open_dir / "state/exit.json"))
    done = as_nobody([python, "-S", "-m", "vmm_ffi.launcher"], input=encode(params))
    log = (open_dir / "state/worker.log").read_text()
    if os.stat("/dev/net/tun").st_mode & 0o006 != 0o006:  # this machine's tun is root-only
        assert done.returncode == 125
        assert "pasta needs /dev/net/tun, which uid 65534 may not open" in log
        assert "chmod 0666 /dev/net/tun" in log and "network: host" in log
        return
    assert done.returncode == 0, done.stderr.decode() + log
    assert decode_result(done.stdout.splitlines()[0]).network == "pasta"
    own = [line for line in log.splitlines() if line.startswith("net:[")]
    assert own and own[0] != os.readlink("/proc/self/ns/net")
