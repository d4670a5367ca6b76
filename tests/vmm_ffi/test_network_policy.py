"""The network policy (vmm_ffi.network.policy), checked from inside real sandboxes through a real
pasta and a real slirp4netns: what each policy reaches, allow/deny, the auto-allowed proxy,
the dropped CAP_NET_ADMIN, and a network helper that dies."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.proxy import connect_proxy, tcp_service
from tests.support.wait import wait_until
from tests.vmm_ffi.conftest import Sandboxes, workload_lines
from tests.vmm_ffi.test_launcher_network import _children, _cmdline
from vmm_ffi.errors import LaunchFailed
from vmm_ffi.launch import read_exit, spawn_launcher
from vmm_ffi.network import bridge as br
from vmm_ffi.network import bridge_leases
from vmm_ffi.network.helper import find_pasta, find_slirp4netns, tun_problem
from vmm_ffi.params import BindMount, BridgeParams, IdShift, NetworkPolicy

pytestmark = pytest.mark.skipif(tun_problem() is not None, reason="/dev/net/tun is not ours")
HELPERS = {"pasta": find_pasta(), "slirp4netns": find_slirp4netns()}
REGISTRY = "pypi.org"  # reached through the machine's proxy (TESTING.md); an outside address
RESOLV = BindMount(source="/etc/resolv.conf", target="/etc/resolv.conf")


SHIFT = IdShift(uid_base=3_600_000, gid_base=3_700_000)


@pytest.fixture(params=["bridge", *sorted(HELPERS)])
def helper(request: pytest.FixtureRequest, tmp_path: Path,
           sandboxes: Sandboxes) -> Iterator[dict[str, Any]]:
    """Launch params of each way of connecting an own netns this machine has: the bridge (a
    root launcher on shifted ids, its own state dir and tag), pasta, slirp4netns."""
    if request.param == "bridge":
        if os.geteuid() != 0 or br.bridge_problem() is not None:
            pytest.skip("the bridge needs root, ip and nft (apt-get install nftables)")
        params = BridgeParams(state_dir=str(tmp_path / "network"), tag=br.tag_of(str(tmp_path)))
        yield {"network": "bridge", "bridge": params, "id_shift": SHIFT}
        sandboxes.close()  # a failed test's launchers first: then their leases are stale
        bridge_leases.sweep(params)
        return
    binary = HELPERS[request.param]
    if binary is None:
        pytest.skip(f"{request.param} is not installed (Makefile APT_PACKAGES)")
    yield {"network": request.param, request.param: binary}


@pytest.fixture
def service() -> Iterator[int]:
    with tcp_service() as port:
        yield port


@pytest.fixture
def engine() -> Iterator[int]:
    """Stands for the engine's port: another host loopback service."""
    with tcp_service(greeting=b"engine here\n") as port:
        yield port


@pytest.fixture(scope="module")
def registry_address() -> str:
    try:
        return socket.getaddrinfo(REGISTRY, 443, socket.AF_INET)[0][4][0]
    except OSError:
        pytest.skip(f"{REGISTRY} does not resolve here")


def probe(host: str, port: int) -> str:
    """A shell line printing ``<host>:<port> reached`` or ``... refused`` (no answer in 3 s
    counts as refused too)."""
    return (f"if nc -w 3 {host} {port} </dev/null >/dev/null 2>&1; then echo '{host}:{port} "
            f"reached'; else echo '{host}:{port} refused'; fi")


def run_probes(sandboxes: Sandboxes, lines: list[str], **params: Any) -> list[str]:
    code, status, log = sandboxes.run(["sh", "-c", "\n".join(lines)], **params)
    assert (code, status.exit_code) == (0, 0), log
    return workload_lines(log)


def test_egress_reaches_the_engine_and_outside_but_no_other_host_loopback_port(
        sandboxes: Sandboxes, helper: dict[str, Any], service: int, engine: int,
        registry_address: str) -> None:
    policy = NetworkPolicy(mode="egress", engine_port=engine)
    seen = run_probes(sandboxes, [probe("127.0.0.1", engine), probe("127.0.0.1", service),
                                  probe(registry_address, 443),
                                  probe("169.254.169.254", 80)], policy=policy, **helper)
    assert seen == [f"127.0.0.1:{engine} reached", f"127.0.0.1:{service} refused",
                    f"{registry_address}:443 reached", "169.254.169.254:80 refused"]


def test_an_allowed_host_loopback_port_is_reached(sandboxes: Sandboxes, helper: dict[str, Any],
                                                  service: int, engine: int) -> None:
    policy = NetworkPolicy(mode="egress", engine_port=engine, allow=[f"127.0.0.1:{service}"])
    seen = run_probes(sandboxes, [probe("127.0.0.1", service), probe("127.0.0.1", engine)],
                      policy=policy, **helper)
    assert seen == [f"127.0.0.1:{service} reached", f"127.0.0.1:{engine} reached"]


def test_engine_policy_reaches_the_engine_and_dns_only(sandboxes: Sandboxes,
                                                       helper: dict[str, Any], engine: int,
                                                       registry_address: str) -> None:
    policy = NetworkPolicy(mode="engine", engine_port=engine)
    seen = run_probes(sandboxes, [probe("127.0.0.1", engine), probe(registry_address, 443),
                                  f"nslookup {REGISTRY} >/dev/null 2>&1 && echo dns works"],
                      policy=policy, binds=[RESOLV], **helper)
    assert seen == [f"127.0.0.1:{engine} reached", f"{registry_address}:443 refused",
                    "dns works"]


def test_none_reaches_nothing_and_runs_no_helper(sandboxes: Sandboxes, engine: int,
                                                 registry_address: str) -> None:
    params = sandboxes.params(["sh", "-c", "\n".join([
        probe("127.0.0.1", engine), probe(registry_address, 443),
        "ip addr show lo | grep -q 'state UP\\|LOOPBACK,UP' && echo lo up", "sleep 30"])],
        network="none", policy=NetworkPolicy(mode="none", engine_port=engine))
    result = sandboxes.spawn(params)
    wait_until(lambda: "lo up" in Path(params.log_path).read_text(), 10, "the probes")
    assert workload_lines(Path(params.log_path).read_text()) == [
        f"127.0.0.1:{engine} refused", f"{registry_address}:443 refused", "lo up"]
    assert not [pid for pid in _children(result.pid)
                if "pasta" in _cmdline(pid) or "slirp4netns" in _cmdline(pid)]
    assert result.network == "none" and result.policy.startswith("none (loopback only)")


def test_a_denied_cidr_is_refused_while_the_proxy_still_works(
        sandboxes: Sandboxes, helper: dict[str, Any], engine: int,
        registry_address: str) -> None:
    request = f"CONNECT {REGISTRY}:443 HTTP/1.1\\r\\nHost: {REGISTRY}:443\\r\\n\\r\\n"
    with connect_proxy() as proxy:
        policy = NetworkPolicy(mode="egress", engine_port=engine,
                               deny=[f"{registry_address}/24"],
                               auto_allow=[f"127.0.0.1:{proxy}"])
        seen = run_probes(sandboxes, [
            probe(registry_address, 443),
            f"printf '{request}' | nc -w 3 127.0.0.1 {proxy} | head -n 1"],
            policy=policy, **helper)
    assert seen[0] == f"{registry_address}:443 refused"
    assert seen[1].startswith("HTTP/1.1 200"), seen


def test_a_host_address_is_refused_unless_allowed(sandboxes: Sandboxes, engine: int) -> None:
    # slirp4netns gives the sandbox an address of its own, so the host's interface address is
    # a different machine to it (pasta copies the host's address: there it is the sandbox's own)
    if HELPERS["slirp4netns"] is None:
        pytest.skip("slirp4netns is not installed")
    host_address = _host_address()
    with tcp_service(host="0.0.0.0") as port:
        net = {"network": "slirp4netns", "slirp4netns": HELPERS["slirp4netns"]}
        closed = run_probes(sandboxes, [probe(host_address, port)],
                            policy=NetworkPolicy(engine_port=engine), **net)
        opened = run_probes(sandboxes, [probe(host_address, port)],
                            policy=NetworkPolicy(engine_port=engine,
                                                 allow=[f"{host_address}:{port}"]), **net)
    assert closed == [f"{host_address}:{port} refused"]
    assert opened == [f"{host_address}:{port} reached"]


def _host_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("203.0.113.1", 9))  # no packet is sent: this picks the outbound address
        return str(s.getsockname()[0])


def test_the_workload_cannot_change_the_rules_or_send_raw_frames(
        sandboxes: Sandboxes, helper: dict[str, Any]) -> None:
    # no CAP_NET_ADMIN (addresses, routes, rules) and no CAP_NET_RAW (a packet socket's frames
    # would reach pasta or slirp4netns without passing the rules)
    seen = run_probes(sandboxes, [
        ("ip addr add 10.99.0.1/32 dev lo 2>&1 | grep -q 'Operation not permitted' "
         "&& echo addr refused"),
        ("ip route add 10.98.0.0/16 dev lo 2>&1 | grep -q 'Operation not permitted' "
         "&& echo route refused"),
        ("arping -c 1 -w 1 -I lo 127.0.0.1 2>&1 | grep -q 'not permitted' "
         "&& echo packet socket refused")], policy=NetworkPolicy(), **helper)
    assert seen == ["addr refused", "route refused", "packet socket refused"]


def test_a_killed_helper_is_logged_and_ends_the_sandbox(sandboxes: Sandboxes,
                                                        helper: dict[str, Any]) -> None:
    if helper["network"] == "bridge":
        pytest.skip("the bridge has no helper process")
    params = sandboxes.params(["sleep", "60"], policy=NetworkPolicy(), **helper)
    result = sandboxes.spawn(params)
    binary = helper[helper["network"]]
    ours = [pid for pid in _children(result.pid) if _cmdline(pid).startswith(f"{binary} ")]
    assert len(ours) == 1
    os.kill(int(ours[0]), signal.SIGKILL)
    code, status = sandboxes.wait(result, params)
    why = f"network helper {helper['network']} ended: killed by signal 9"
    assert status.error == why and status.signal == signal.SIGKILL, status
    assert code == 128 + signal.SIGKILL
    assert f"[iii-launcher] {why}; ending the sandbox" in Path(params.log_path).read_text()
    assert read_exit(params.exit_path) == status


@pytest.mark.parametrize(("entry", "message"), [
    ("300.1.1.1", "network.allow[0]: '300.1.1.1' is not an IP address or CIDR"),
    ("10.0.0.0/8:99999", "network.allow[0]: '10.0.0.0/8:99999': ports must be within 1-65535"),
], ids=["bad-address", "bad-port"])
def test_a_bad_entry_fails_the_launch_naming_it(sandboxes: Sandboxes, helper: dict[str, Any],
                                                entry: str, message: str) -> None:
    params = sandboxes.params(["true"], policy=NetworkPolicy(allow=[entry]), **helper)
    with pytest.raises(LaunchFailed) as failed:
        sandboxes.spawn(params)
    assert failed.value.exit_code == 125
    assert message in str(failed.value)


def marked(mark: bytes) -> list[int]:
    """Processes whose environment carries ``mark`` (what our launchers passed down)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if mark in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.mark.slow  # fifty sandboxes per backend: the whole suite runs it, `make check` does not
def test_no_helper_outlives_fifty_cycles_and_kill9s(sandboxes: Sandboxes,
                                                   helper: dict[str, Any]) -> None:
    mark = f"III_TEST_MARK={os.urandom(6).hex()}"
    key, value = mark.split("=")
    for i in range(50):
        params = sandboxes.params(["true"] if i % 10 else ["sleep", "60"],
                                  policy=NetworkPolicy(engine_port=1), **helper)
        result = spawn_launcher(params, Path(params.exit_path).parent, extra_env={key: value})
        if i % 10 == 0:  # every tenth: kill -9 of the launcher, its helper left to PDEATHSIG
            assert len(marked(mark.encode())) >= 2  # the launcher and what it forked
            os.kill(result.pid, signal.SIGKILL)
        os.waitpid(result.pid, 0)
    wait_until(lambda: not marked(mark.encode()), 20, "every process of the 50 sandboxes gone")
