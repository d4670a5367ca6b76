"""The namespace backend for a normal user: uid 65534 maps only itself, as root inside."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.rootfs import make_busybox_rootfs
from vmm_ffi.launch import launcher_python_path
from vmm_ffi.network.helper import find_pasta
from vmm_ffi.params import (
    LaunchParams,
    NetworkPolicy,
    OverlayRoot,
    decode_result,
    encode,
    read_exit_status,
)

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
        probe = [candidate, "-S", "-c", "import msgspec, vmm_ffi.launcher.program"]
        if os.path.exists(candidate) and as_nobody(probe).returncode == 0:
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


def nobody_dirs(base: Path) -> None:
    """The sandbox's upper, work, merged and state dirs, owned by uid 65534."""
    for sub in ("upper", "work", "merged", "state"):
        (base / sub).mkdir()
        os.chown(base / sub, NOBODY, NOBODY)


def test_unprivileged_user_gets_a_sandbox(open_dir: Path) -> None:
    python = interpreter_for_nobody()
    if python is None:
        pytest.skip("needs root, setpriv and a Python 3.11 that uid 65534 can run")
    lower = make_busybox_rootfs(open_dir / "image")
    nobody_dirs(open_dir)
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
    nobody_dirs(open_dir)
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


def test_unprivileged_user_gets_policy_none_without_a_helper(open_dir: Path) -> None:
    # `none` needs no tun device: a normal user gets it here too (pasta does not: see above)
    python = interpreter_for_nobody()
    if python is None:
        pytest.skip("needs root (to become uid 65534), setpriv and a usable Python")
    lower = make_busybox_rootfs(open_dir / "image")
    nobody_dirs(open_dir)
    with socket.create_server(("127.0.0.1", 0)) as host_service:
        port = host_service.getsockname()[1]
        script = (f"nc -w 2 127.0.0.1 {port} </dev/null 2>/dev/null && echo reached "
                  "|| echo refused; "
                  "ip addr show lo | grep -q UP && echo lo up; "
                  "ip addr add 10.9.9.9/32 dev lo 2>/dev/null || echo no net admin")
        params = LaunchParams(
            name="nb", backend="namespace", network="none",
            policy=NetworkPolicy(mode="none", engine_port=port),
            rootfs=OverlayRoot(lower=[str(lower)], upper=str(open_dir / "upper"),
                               work=str(open_dir / "work")),
            merged=str(open_dir / "merged"), argv=["sh", "-c", script],
            env={"PATH": "/bin"}, log_path=str(open_dir / "state/worker.log"),
            exit_path=str(open_dir / "state/exit.json"))
        done = as_nobody([python, "-S", "-m", "vmm_ffi.launcher"], input=encode(params))
    log = (open_dir / "state/worker.log").read_text()
    assert done.returncode == 0, done.stderr.decode() + log
    result = decode_result(done.stdout.splitlines()[0])
    assert result.network == "none" and result.policy.startswith("none (loopback only)")
    assert [x for x in log.splitlines() if not x.startswith("[iii-launcher]")] == [
        "refused", "lo up", "no net admin"]


@pytest.fixture
def nobody_range() -> Iterator[int]:
    """A subordinate range for uid 65534 in /etc/subuid and /etc/subgid (restored after)."""
    if os.geteuid() != 0 or shutil.which("newuidmap") is None:
        pytest.skip("needs root (to edit /etc/subuid) and newuidmap (Debian uidmap)")
    start = 5_000_000
    saved = {}
    for path in (Path("/etc/subuid"), Path("/etc/subgid")):
        saved[path] = path.read_text() if path.exists() else None
        path.write_text((saved[path] or "") + f"nobody:{start}:65536\n")
    try:
        yield start
    finally:
        for path, text in saved.items():
            if text is None:
                path.unlink()
            else:
                path.write_text(text)


@pytest.mark.host_exclusive  # nobody_range edits /etc/subuid, which root daemons read and extend
def test_unprivileged_user_with_a_subordinate_range_gets_it(open_dir: Path,
                                                            nobody_range: int) -> None:
    python = interpreter_for_nobody()
    if python is None:
        pytest.skip("needs setpriv and a Python 3.11 that uid 65534 can run")
    lower = make_busybox_rootfs(open_dir / "image")
    # as a non-root daemon's own extraction and home: the user owns the image and the dirs
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(lower)], check=True)
    os.chown(open_dir, NOBODY, NOBODY)
    nobody_dirs(open_dir)
    script = ("cat /proc/self/uid_map; mkdir -p /var/cache/apt && chown 42:42 /var/cache/apt "
              "&& touch /var/cache/apt/pkg && chown 42 /var/cache/apt/pkg && echo chowned")
    params = LaunchParams(
        name="nb", backend="namespace", rootfs=OverlayRoot(
            lower=[str(lower)], upper=str(open_dir / "upper"), work=str(open_dir / "work")),
        merged=str(open_dir / "merged"), argv=["sh", "-c", script], env={"PATH": "/bin"},
        log_path=str(open_dir / "state/worker.log"), exit_path=str(open_dir / "state/exit.json"))
    done = as_nobody([python, "-S", "-m", "vmm_ffi.launcher"], input=encode(params))
    log = (open_dir / "state/worker.log").read_text()
    assert done.returncode == 0, done.stderr.decode() + log
    assert decode_result(done.stdout.splitlines()[0]).id_map == \
        f"0 -> {NOBODY}, 1-65535 -> {nobody_range}-{nobody_range + 65534}"
    maps = [line.split() for line in log.splitlines() if line.strip()[:1].isdigit()]
    assert ["0", str(NOBODY), "1"] in maps and ["1", str(nobody_range), "65535"] in maps
    assert "chowned" in log  # apt's _apt (42) exists in the sandbox
    apt_dir = open_dir / "upper/var/cache/apt"
    assert apt_dir.stat().st_uid == nobody_range + 41  # a subordinate id on the host
    # The daemon (as this user) cannot delete that dir's contents itself; remove_tree can
    # (through a helper it runs with its own interpreter: one uid 65534 may exec again).
    system_python = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
    if not os.path.exists(system_python):
        pytest.skip(f"{system_python} is needed to run the removal as uid 65534")
    code = ("from pathlib import Path; from daemon.trees import remove_tree; "
            f"remove_tree(Path({str(open_dir / 'upper')!r}))")
    removed = as_nobody([system_python, "-c", code])
    assert removed.returncode == 0, removed.stderr.decode()
    assert not (open_dir / "upper").exists()
