"""A sandbox on its daemon's bridge (``vmm_ffi.network.bridge``): a lease, a veth pair, no process.

- per sandbox a veth pair: ``iv<tag><7 random hex>`` on the bridge, ``eth0`` in the sandbox with the
  leased address (sandboxes reach each other only where their policy allows: the subnet is
  refused like any private range). It goes with the sandbox's network namespace, also after
  ``kill -9``;
- a lease per sandbox in ``<home>/network/leases/<address>`` (launcher pid and ports), the
  only per-sandbox state on the host: a lease whose launcher is gone is stale; its ports are
  elements of the table's ``lo_ports`` set.

``attach`` runs in a short-lived child of the launcher (host root, the host's namespaces),
``release`` in the exit recorder when the sandbox ends, ``sweep`` at daemon start. The last
release (or a sweep finding no live lease) removes the bridge and the table.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
from typing import Any

import msgspec

from vmm_ffi import syscalls as sc
from vmm_ffi.network.bridge import (
    SANDBOX_IF,
    BridgeError,
    ensure_bridge,
    locked,
    names,
    no_ipv6,
    remove_bridge,
    run,
)
from vmm_ffi.params import BridgeParams


def _leases(p: BridgeParams) -> str:
    return os.path.join(p.state_dir, "leases")


def _read_lease(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            value = msgspec.json.decode(f.read())
    except (OSError, msgspec.DecodeError):
        return None
    return value if isinstance(value, dict) else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"vmm_ffi.launcher" in f.read()
    except OSError:
        return False


def _elements(address: str, ports: list[list[int]]) -> str:
    return ", ".join(f"{address} . {lo}" if lo == hi else f"{address} . {lo}-{hi}"
                     for lo, hi in ports)


def _drop_lease(p: BridgeParams, path: str, lease: dict[str, Any],
                veth_too: bool = True) -> None:
    ports = lease.get("ports")
    if isinstance(ports, list) and ports:
        _, table = names(p.tag)
        elements = _elements(os.path.basename(path), ports)
        run(["nft", f"delete element ip {table} lo_ports {{ {elements} }}"], check=False)
    if veth_too:
        _drop_veth(p, lease)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _drop_veth(p: BridgeParams, lease: dict[str, Any]) -> None:
    """The veth goes with the sandbox's namespace, but the kernel frees namespaces lazily: gone
    now, nothing is left for whoever looks (its name is never reused, so no lock is needed)."""
    veth = lease.get("veth")
    if isinstance(veth, str) and veth.startswith(f"iv{p.tag}") and \
            os.path.isdir(f"/sys/class/net/{veth}"):
        run(["ip", "link", "del", veth], check=False)


def _sweep_leases(p: BridgeParams) -> int:
    """Drop the leases of launchers that are gone; returns how many live ones remain."""
    live = 0
    directory = _leases(p)
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        path = os.path.join(directory, name)
        lease = _read_lease(path)
        if lease is not None and _alive(lease.get("pid")):
            live += 1
        else:
            _drop_lease(p, path, lease or {})
    return live


def attach(p: BridgeParams, launcher: int,
           forward: list[tuple[int, int]]) -> ipaddress.IPv4Interface:
    """Lease an address for ``launcher``'s sandbox, plug a veth pair into the bridge and the
    launcher's (new) network namespace, configure ``eth0`` there (as host root, from the host's
    namespaces; the caller is a throwaway process: this ``setns``es it). Returns the
    gateway (with the subnet's prefix)."""
    with locked(os.path.join(p.state_dir, "lock")):
        gateway = ensure_bridge(p)
        _sweep_leases(p)
        os.makedirs(_leases(p), mode=0o700, exist_ok=True)
        hosts = list(gateway.network.hosts())[1:]
        taken = set(os.listdir(_leases(p)))
        slot, address = next(((i, str(h)) for i, h in enumerate(hosts) if str(h) not in taken),
                             (-1, ""))
        if slot < 0:
            raise BridgeError(f"no free address left in {gateway.network}")
        ports = [list(r) for r in forward]
        host_if = f"iv{p.tag}{os.urandom(4).hex()[:7]}"  # 15 bytes, never a reused name
        with open(os.path.join(_leases(p), address), "wb") as f:
            f.write(msgspec.json.encode({"pid": launcher, "ports": ports, "veth": host_if}))
        bridge, table = names(p.tag)
        if ports:
            run(["nft", f"add element ip {table} lo_ports {{ {_elements(address, ports)} }}"])
        run(["ip", "-batch", "-"], stdin=f"link add {host_if} type veth peer name {SANDBOX_IF} "
            f"netns {launcher}\nlink set {host_if} master {bridge}\nlink set {host_if} up\n")
        no_ipv6(host_if)
    netns = os.open(f"/proc/{launcher}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    sc.setns(netns, sc.CLONE_NEWNET)
    os.close(netns)
    for name in ("all", "default", SANDBOX_IF):  # IPv4 only: no link-local IPv6 path around
        no_ipv6(name)
    own = ipaddress.IPv4Interface(f"{address}/{gateway.network.prefixlen}")
    run(["ip", "-batch", "-"], stdin=f"link set lo up\naddr add {own} dev {SANDBOX_IF}\n"
        f"link set {SANDBOX_IF} up\nroute add default via {gateway.ip}\n")
    return gateway


def release(p: BridgeParams, launcher: int) -> None:
    """The sandboxes of ``launcher`` ended: drop its lease; the last one removes the bridge.
    Creates nothing: where the daemon's home is gone (a test's temporary home being removed),
    only the bridge and table go."""
    ours = []
    try:
        with locked(os.path.join(p.state_dir, "lock"), create=False):
            directory = _leases(p)
            for name in os.listdir(directory) if os.path.isdir(directory) else []:
                path = os.path.join(directory, name)
                lease = _read_lease(path)
                if lease is not None and lease.get("pid") == launcher:
                    _drop_lease(p, path, lease, veth_too=False)  # after the lock: it is slow
                    ours.append(lease)
            if _sweep_leases(p) == 0:
                remove_bridge(p)
    except FileNotFoundError:
        remove_bridge(p)
    for lease in ours:
        _drop_veth(p, lease)


def sweep(p: BridgeParams) -> bool:
    """At daemon start: drop stale leases; with none live, remove this daemon's bridge and
    table (never another daemon's: the names are this home's). Returns whether it removed."""
    bridge, _ = names(p.tag)
    if not os.path.isdir(p.state_dir) and not os.path.isdir(f"/sys/class/net/{bridge}"):
        return False
    try:
        with locked(os.path.join(p.state_dir, "lock"), create=False):
            if _sweep_leases(p) == 0:
                remove_bridge(p)
                return True
    except FileNotFoundError:  # no sandbox ever attached from this home
        remove_bridge(p)
        return True
    return False


class BridgeAttach:
    """The throwaway child that attaches one sandbox (forked by the launcher before it leaves
    the host's namespaces; ``go()`` once the launcher has its new network namespace)."""

    def __init__(self, pid: int, go_w: int, result_r: int) -> None:
        self.pid, self._go_w, self._result_r = pid, go_w, result_r

    @classmethod
    def fork(cls, p: BridgeParams, forward: list[tuple[int, int]]) -> BridgeAttach:
        launcher = os.getpid()
        go_r, go_w = os.pipe()
        result_r, result_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - exercised through real launchers
            code = 0
            try:
                os.close(go_w)
                os.close(result_r)
                sc.set_parent_death_signal(signal.SIGKILL)
                if os.read(go_r, 1) == b"1":
                    gateway = attach(p, launcher, forward)
                    os.write(result_w, msgspec.json.encode({"gateway": str(gateway)}))
            except (OSError, ValueError) as exc:
                os.write(result_w, msgspec.json.encode({"error": str(exc)}))
                code = 1
            finally:
                os._exit(code)
        os.close(go_r)
        os.close(result_w)
        return cls(pid, go_w, result_r)

    def go(self) -> None:
        os.write(self._go_w, b"1")
        os.close(self._go_w)

    def wait(self) -> ipaddress.IPv4Interface:
        """The gateway, once the sandbox's ``eth0`` is up; raises ``BridgeError``."""
        data = b""
        while chunk := os.read(self._result_r, 4096):
            data += chunk
        os.close(self._result_r)
        os.waitpid(self.pid, 0)
        try:
            answer = msgspec.json.decode(data or b"{}")
        except msgspec.DecodeError:
            answer = {}
        if "gateway" not in answer:
            raise BridgeError(str(answer.get("error") or "the bridge attach process died"))
        return ipaddress.IPv4Interface(answer["gateway"])
