"""The namespace sandbox's own network namespace, connected by a real pasta or (the second
choice) a real slirp4netns (vmm_ffi.network.helper): outbound and host-loopback traffic works, the
host's netns-scoped surface does not."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.proxy import tcp_service
from tests.support.rootfs import extract_python_rootfs
from tests.vmm_ffi.conftest import Sandboxes, workload_lines
from vmm_ffi.errors import LaunchFailed
from vmm_ffi.network.helper import find_pasta, find_slirp4netns, tun_problem
from vmm_ffi.params import DirectoryRoot, NetworkPolicy

pytestmark = pytest.mark.skipif(tun_problem() is not None, reason="/dev/net/tun is not ours")
PASTA = find_pasta()
SLIRP = find_slirp4netns()


@pytest.fixture(params=["pasta", "slirp4netns"])
def own_net(request: pytest.FixtureRequest) -> dict[str, str]:
    """Launch params of an own network namespace through each helper (skipped when missing)."""
    binary = PASTA if request.param == "pasta" else SLIRP
    if binary is None:
        pytest.skip(f"{request.param} is not installed (Makefile APT_PACKAGES)")
    return {"network": request.param, request.param: binary}


@pytest.fixture
def loopback_service() -> Iterator[int]:
    """A host service on 127.0.0.1 that greets every client; yields its port."""
    with tcp_service() as port:
        yield port


def test_sandbox_has_its_own_network_namespace(sandboxes: Sandboxes,
                                               own_net: dict[str, str]) -> None:
    code, _, log = sandboxes.run(["readlink", "/proc/self/ns/net"], **own_net)
    assert code == 0, log
    assert workload_lines(log)[-1].startswith("net:[")
    assert workload_lines(log)[-1] != os.readlink("/proc/self/ns/net")
    # the host's network namespace is still what a `network: host` sandbox gets
    _, _, host_log = sandboxes.run(["readlink", "/proc/self/ns/net"])
    assert workload_lines(host_log)[-1] == os.readlink("/proc/self/ns/net")


def test_the_engine_port_is_reached_at_127_0_0_1(sandboxes: Sandboxes, loopback_service: int,
                                                 own_net: dict[str, str]) -> None:
    # As libkrun's TSI: the engine on the host's loopback needs no III_URL rewrite (slirp4netns:
    # through the init's DNAT to its gateway). Other host ports: test_network_policy.
    code, status, log = sandboxes.run(["nc", "-w", "3", "127.0.0.1", str(loopback_service)],
                                      policy=NetworkPolicy(engine_port=loopback_service),
                                      **own_net)
    assert (code, status.exit_code) == (0, 0), log
    assert "hello from the host" in workload_lines(log)


def test_helper_ends_with_the_sandbox(sandboxes: Sandboxes, own_net: dict[str, str]) -> None:
    params = sandboxes.params(["sleep", "30"], **own_net)
    result = sandboxes.spawn(params)
    helper = own_net[own_net["network"]]
    ours = [pid for pid in _children(result.pid) if _cmdline(pid).startswith(f"{helper} ")]
    assert len(ours) == 1, _children(result.pid)  # the helper is the launcher's child ...
    os.kill(result.pid, signal.SIGKILL)  # ... and dies with it, even when the launcher is killed
    deadline = time.monotonic() + 5
    while Path(f"/proc/{ours[0]}").exists() and _state(ours[0]) != "Z" \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not Path(f"/proc/{ours[0]}").exists() or _state(ours[0]) == "Z"


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def _state(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_missing_pasta_is_a_setup_error_naming_the_fix(sandboxes: Sandboxes,
                                                       tmp_path: Path) -> None:
    params = sandboxes.params(["true"], network="pasta", pasta=str(tmp_path / "none"))
    with pytest.raises(LaunchFailed) as failed:
        sandboxes.spawn(params)
    assert failed.value.exit_code == 125
    message = str(failed.value)
    assert f"cannot run pasta (exec {tmp_path / 'none'}" in message
    assert "apt-get install passt" in message and "network: host" in message


@pytest.fixture(scope="module")
def python_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_python_rootfs(tmp_path_factory.mktemp("image") / "rootfs")


ABSTRACT_PROBE = """
import socket
s = socket.socket(socket.AF_UNIX)
try:
    s.connect("\\0iii-test-{tag}")
    print("abstract: reached")
except OSError as exc:
    print("abstract:", exc.strerror)
"""


def test_host_abstract_unix_sockets_are_out_of_reach(sandboxes: Sandboxes, python_rootfs: Path,
                                                     own_net: dict[str, str]) -> None:
    tag = os.urandom(4).hex()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(f"\0iii-test-{tag}")
    listener.listen()
    try:
        copy = DirectoryRoot(path=str(python_rootfs))  # read-only use: nothing is written
        argv = ["python3", "-c", ABSTRACT_PROBE.format(tag=tag)]
        _, _, own = sandboxes.run(argv, rootfs=copy, env={"PATH": "/usr/bin:/bin"}, **own_net)
        _, _, shared = sandboxes.run(argv, rootfs=copy, env={"PATH": "/usr/bin:/bin"})
    finally:
        listener.close()
    assert "abstract: Connection refused" in workload_lines(own), own
    assert "abstract: reached" in workload_lines(shared)  # the probe can tell the difference
