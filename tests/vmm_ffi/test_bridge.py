"""A root launcher's bridge network (vmm_ffi.network.bridge), from inside real sandboxes: the policy
holds with no helper process, and nothing (veth, lease, table, bridge) outlives the sandboxes,
also after ``kill -9``. Every test has its own state dir, so its own tag: bridge, veths and
table are its own, never another test's or daemon's."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.proxy import tcp_service
from tests.support.wait import wait_until
from tests.vmm_ffi.conftest import Sandboxes, workload_lines
from tests.vmm_ffi.test_launcher_network import _children, _cmdline
from tests.vmm_ffi.test_network_policy import probe, run_probes
from vmm_ffi.errors import LaunchFailed
from vmm_ffi.network import bridge as br
from vmm_ffi.network import bridge_leases
from vmm_ffi.params import BridgeParams, IdShift, NetworkPolicy

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or br.shutil.which("nft", path=br.SEARCH_PATH) is None,
    reason="the bridge is a root daemon's (and needs nft: apt-get install nftables)")
SHIFT = IdShift(uid_base=3_200_000, gid_base=3_300_000)


@pytest.fixture
def bridge(tmp_path: Path, sandboxes: Sandboxes) -> Iterator[dict[str, Any]]:
    params = BridgeParams(state_dir=str(tmp_path / "network"), tag=br.tag_of(str(tmp_path)))
    yield {"network": "bridge", "bridge": params, "id_shift": SHIFT}
    sandboxes.close()  # first: a failed test's launchers (killed with their recorders) ...
    bridge_leases.sweep(params)  # ... leave stale leases, swept here with this test's bridge


def leftovers(params: BridgeParams) -> dict[str, object]:
    """What of this tag is on the host: bridge, veths, table, leases."""
    bridge_name, table = br.names(params.tag)
    links = os.listdir("/sys/class/net")
    tables = br.run(["nft", "list", "tables"])
    leases = Path(params.state_dir, "leases")
    return {"bridge": bridge_name in links,
            "veths": [x for x in links if x.startswith(f"iv{params.tag}")],
            "table": f"table ip {table}" in tables,
            "leases": sorted(os.listdir(leases)) if leases.is_dir() else []}


NOTHING = {"bridge": False, "veths": [], "table": False, "leases": []}


@pytest.fixture(scope="module")
def registry_address() -> str:
    try:
        return socket.getaddrinfo("pypi.org", 443, socket.AF_INET)[0][4][0]
    except OSError:
        pytest.skip("pypi.org does not resolve here")


def test_egress_on_the_bridge_with_no_helper_process(sandboxes: Sandboxes,
                                                     bridge: dict[str, Any],
                                                     registry_address: str) -> None:
    with tcp_service() as other, tcp_service(greeting=b"engine\n") as engine:
        params = sandboxes.params(["sh", "-c", "\n".join([
            probe("127.0.0.1", engine), probe("127.0.0.1", other),
            probe(registry_address, 443), probe("169.254.169.254", 80),
            "ip -4 addr show eth0 | grep -q 'inet 10\\.' && echo eth0 on the subnet",
            "ip -6 addr show eth0 | grep -q inet6 || echo no ipv6 on eth0",
            "echo probes done", "sleep 30"])],
            policy=NetworkPolicy(engine_port=engine), **bridge)
        result = sandboxes.spawn(params)
        assert result.network == "bridge"
        wait_until(lambda: "probes done" in Path(params.log_path).read_text(), 20, "probes")
        seen = workload_lines(Path(params.log_path).read_text())
    assert seen == [f"127.0.0.1:{engine} reached", f"127.0.0.1:{other} refused",
                    f"{registry_address}:443 reached", "169.254.169.254:80 refused",
                    "eth0 on the subnet", "no ipv6 on eth0", "probes done"]
    programs = [_cmdline(pid) for pid in _children(result.pid)]
    assert not [c for c in programs if "pasta" in c or "slirp4netns" in c], programs
    assert len(programs) == 2, programs  # the exit recorder and the sandbox init, no helper
    now = leftovers(bridge["bridge"])
    assert now["bridge"] and now["table"] and len(now["veths"]) == 1  # type: ignore[arg-type]
    os.kill(result.pid, signal.SIGTERM)
    sandboxes.wait(result, params)
    assert leftovers(bridge["bridge"]) == NOTHING  # the last sandbox took the bridge along


def address_of(log: str) -> str:
    return next(line.split()[1] for line in workload_lines(log) if line.startswith("addr "))


def test_two_sandboxes_reach_each_other_only_when_allowed(sandboxes: Sandboxes,
                                                          bridge: dict[str, Any]) -> None:
    server = sandboxes.params(["sh", "-c",
                               ("echo addr $(ip -4 -o addr show eth0 | awk '{print $4}' | "
                               "cut -d/ -f1); while true; do echo hi | nc -l -p 8080; done")],
                              policy=NetworkPolicy(), **bridge)
    result = sandboxes.spawn(server)
    wait_until(lambda: "addr " in Path(server.log_path).read_text(), 10, "the address")
    peer = address_of(Path(server.log_path).read_text())
    closed = run_probes(sandboxes, [probe(peer, 8080)], policy=NetworkPolicy(), **bridge)
    opened = run_probes(sandboxes, [probe(peer, 8080)],
                        policy=NetworkPolicy(allow=[f"{peer}:8080"]), **bridge)
    assert (closed, opened) == ([f"{peer}:8080 refused"], [f"{peer}:8080 reached"])
    os.kill(result.pid, signal.SIGTERM)
    sandboxes.wait(result, server)
    assert leftovers(bridge["bridge"]) == NOTHING


@pytest.mark.slow  # fifty sandboxes: the whole suite runs it, `make check` does not
def test_nothing_outlives_kill9_and_fifty_cycles(sandboxes: Sandboxes,
                                                 bridge: dict[str, Any]) -> None:
    params = bridge["bridge"]
    for _ in range(50):
        code, status, log = sandboxes.run(["true"], policy=NetworkPolicy(engine_port=1), **bridge)
        assert (code, status.exit_code) == (0, 0), log
    assert leftovers(params) == NOTHING
    # kill -9 of the launcher and of everything of it (its process group: the exit recorder
    # too), so nothing releases the lease: the namespace takes the veth, the sweep the rest
    held = sandboxes.params(["sleep", "60"], policy=NetworkPolicy(engine_port=1), **bridge)
    result = sandboxes.spawn(held)
    lease = json.loads(Path(params.state_dir, "leases").iterdir().__next__().read_text())
    assert lease["pid"] == result.pid and lease["ports"] == [[1, 1]]
    os.killpg(result.pid, signal.SIGKILL)
    wait_until(lambda: not leftovers(params)["veths"], 20, "the veth to go with the netns")
    assert leftovers(params)["bridge"] and leftovers(params)["leases"]  # stale, not yet swept
    assert bridge_leases.sweep(params) is True
    assert leftovers(params) == NOTHING


def test_an_overlapping_subnet_is_refused_naming_it(sandboxes: Sandboxes,
                                                    bridge: dict[str, Any]) -> None:
    # a route of the host itself, not of a bridge another test or daemon may remove meanwhile
    route = next(net for net, dev in br.host_routes() if not dev.startswith("iii-"))
    taken = dict(bridge, bridge=BridgeParams(state_dir=bridge["bridge"].state_dir,
                                             tag=bridge["bridge"].tag, subnet=str(route)))
    params = sandboxes.params(["true"], policy=NetworkPolicy(), **taken)
    with pytest.raises(LaunchFailed) as failed:
        sandboxes.spawn(params)
    assert f"network_subnet {route} overlaps the host's route {route}" in str(failed.value)
    assert leftovers(bridge["bridge"]) == NOTHING
