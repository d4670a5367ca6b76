"""A root daemon's sandbox network: one bridge, a veth pair per sandbox, nftables; no process
per sandbox.

Everything is named after the daemon's home (``tag`` = a hash of it), so daemons on one host
never share or sweep each other's parts:

- bridge ``iii-<tag>`` with the gateway address of the daemon's subnet (``network_subnet`` in
  daemon.yaml, else the first free ``/24`` of ``10.89.0.0/16`` upwards from the tag's, checked
  against the host's routes under a host-wide lock);
- per sandbox a veth pair: ``iv<tag><7 random hex>`` on the bridge, ``eth0`` in the sandbox with the
  leased address (sandboxes reach each other only where their policy allows: the subnet is
  refused like any private range). It goes with the sandbox's network namespace, also after
  ``kill -9``;
- table ``ip iii-<tag>``: masquerade of the subnet, the engine's (and allowed) host loopback
  ports DNATed from the gateway to ``127.0.0.1`` for exactly the sandbox addresses that may
  reach them (set ``lo_ports``), nothing else of the host from the bridge;
- a lease per sandbox in ``<home>/network/leases/<address>`` (launcher pid and ports), the
  only per-sandbox state on the host: a lease whose launcher is gone is stale.

``attach`` runs in a short-lived child of the launcher (host root, the host's namespaces),
``release`` in the exit recorder when the sandbox ends, ``sweep`` at daemon start. The last
release (or a sweep finding no live lease) removes the bridge and the table.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import msgspec

from vmm_ffi import syscalls as sc
from vmm_ffi.netpolicy import SEARCH_PATH
from vmm_ffi.params import BridgeParams

POOL = ipaddress.IPv4Network("10.89.0.0/16")
HOST_LOCK = "/run/iii-bridge.lock"  # allocation of a subnet among the host's daemons
TOOL_TIMEOUT_S = 10.0
SANDBOX_IF = "eth0"
HINT = "apt-get install nftables iproute2, or set `network_backend: pasta` in daemon.yaml"


class BridgeError(OSError):
    """A step of the bridge setup failed; the message names the command and its error."""


def bridge_problem() -> str | None:
    """Why this process cannot make the bridge (root, ``ip`` and ``nft``), or None."""
    if os.geteuid() != 0:
        return "the bridge needs a root daemon"
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool, path=SEARCH_PATH) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install nftables iproute2)"
    return None


def tag_of(home: str) -> str:
    """Six hex digits naming this daemon home's bridge, veths and table (the daemon's call:
    hashlib stays out of the launcher)."""
    import hashlib

    return hashlib.sha256(os.path.realpath(home).encode()).hexdigest()[:6]


def names(tag: str) -> tuple[str, str]:
    """(bridge, nftables table) of a tag."""
    return f"iii-{tag}", f"iii-{tag}"


def _tool(name: str) -> str:
    found = shutil.which(name, path=SEARCH_PATH)
    if found is None:
        raise BridgeError(f"{name} is not installed ({HINT})")
    return found


def run(argv: list[str], stdin: str | None = None, check: bool = True) -> str:
    """Run ``ip``/``nft``/``bridge``; raises ``BridgeError`` naming the command."""
    try:
        proc = subprocess.run([_tool(argv[0]), *argv[1:]], input=stdin, capture_output=True,
                              text=True, timeout=TOOL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BridgeError(f"{' '.join(argv)} timed out") from exc
    if check and proc.returncode != 0:
        raise BridgeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


@contextlib.contextmanager
def locked(path: str, create: bool = True) -> Iterator[None]:
    """Hold an flock on ``path``; without ``create`` a missing file raises
    ``FileNotFoundError`` (its home is being removed: nothing may be made in it again)."""
    if create:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def host_routes() -> list[tuple[ipaddress.IPv4Network, str]]:
    """The host's IPv4 routes (network, device), default route left out."""
    out = []
    with open("/proc/net/route") as f:
        for line in f.read().splitlines()[1:]:
            cols = line.split()
            dest = ipaddress.IPv4Address(bytes.fromhex(cols[1])[::-1])
            mask = ipaddress.IPv4Address(bytes.fromhex(cols[7])[::-1])
            net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
            if net.prefixlen:
                out.append((net, cols[0]))
    return out


def check_subnet(subnet: ipaddress.IPv4Network, bridge: str) -> None:
    """Raise ``BridgeError`` when ``subnet`` overlaps a host route not of our ``bridge``."""
    if subnet.prefixlen > 29:
        raise BridgeError(f"network_subnet {subnet} is too small: use a /29 or larger")
    for route, device in host_routes():
        if device != bridge and route.overlaps(subnet):
            raise BridgeError(f"network_subnet {subnet} overlaps the host's route {route} "
                              f"(dev {device}); pick another subnet")


def choose_subnet(p: BridgeParams, bridge: str) -> ipaddress.IPv4Network:
    """The configured subnet (checked), else the first free /24 of the pool from the tag's."""
    if p.subnet is not None:
        configured = ipaddress.IPv4Network(p.subnet, strict=False)
        check_subnet(configured, bridge)
        return configured
    candidates = list(POOL.subnets(new_prefix=24))
    start = int(p.tag, 16) % len(candidates)
    for subnet in candidates[start:] + candidates[:start]:
        try:
            check_subnet(subnet, bridge)
        except BridgeError:
            continue
        return subnet
    raise BridgeError(f"no free /24 left in {POOL}; set network_subnet in daemon.yaml")


def ensure_bridge(p: BridgeParams) -> ipaddress.IPv4Interface:
    """The bridge and table of this daemon (made when missing); returns the gateway address
    with its prefix. Call under the state dir's lock."""
    bridge, table = names(p.tag)
    state = os.path.join(p.state_dir, "bridge.json")
    if os.path.isdir(f"/sys/class/net/{bridge}") and os.path.exists(state):
        with open(state, "rb") as f:
            return ipaddress.IPv4Interface(msgspec.json.decode(f.read())["gateway"])
    with locked(HOST_LOCK):
        subnet = choose_subnet(p, bridge)
        gateway = ipaddress.IPv4Interface(f"{next(subnet.hosts())}/{subnet.prefixlen}")
        if not os.path.isdir(f"/sys/class/net/{bridge}"):
            run(["ip", "link", "add", bridge, "type", "bridge"])
        run(["ip", "addr", "replace", str(gateway), "dev", bridge])
        run(["ip", "link", "set", bridge, "up"])
        no_ipv6(bridge)
    for key, value in ((f"net/ipv4/conf/{bridge}/route_localnet", "1"),
                       ("net/ipv4/ip_forward", "1")):  # as docker does: NAT needs forwarding
        with open(f"/proc/sys/{key}", "w") as f:
            f.write(value)
    run(["nft", "-f", "-"], stdin=ruleset(table, bridge, gateway))
    tmp = f"{state}.tmp"
    with open(tmp, "wb") as f:
        f.write(msgspec.json.encode({"gateway": str(gateway), "bridge": bridge, "table": table}))
    os.replace(tmp, state)
    return gateway


def ruleset(table: str, bridge: str, gateway: ipaddress.IPv4Interface) -> str:
    """The daemon's table: NAT out, the gateway's DNAT to loopback for leased (address, port)
    pairs, and nothing else of the host from the bridge."""
    subnet = gateway.network
    return f"""table ip {table}
delete table ip {table}
table ip {table} {{
  set lo_ports {{ type ipv4_addr . inet_service; flags interval; }}
  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;
    iifname "{bridge}" ip daddr {gateway.ip} ip saddr . tcp dport @lo_ports dnat to 127.0.0.1
  }}
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != "{bridge}" masquerade
  }}
  chain input {{ type filter hook input priority filter; policy accept;
    iifname "{bridge}" ct status dnat accept
    iifname "{bridge}" ct state established,related accept
    iifname "{bridge}" drop
  }}
  chain forward {{ type filter hook forward priority filter; policy accept;
    iifname "{bridge}" accept
    oifname "{bridge}" ct state established,related accept
    oifname "{bridge}" drop
  }}
}}
"""


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


def _remove_bridge(p: BridgeParams) -> None:
    bridge, table = names(p.tag)
    run(["nft", "delete", "table", "ip", table], check=False)
    run(["ip", "link", "del", bridge], check=False)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(p.state_dir, "bridge.json"))


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


def no_ipv6(interface: str) -> None:
    """No IPv6 on ``interface`` (of the current network namespace): the bridge is IPv4 only,
    so no link-local IPv6 path leads around the IPv4 rules."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{interface}/disable_ipv6", "w") as f:
            f.write("1")
    except FileNotFoundError:
        pass  # a kernel without IPv6


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
                _remove_bridge(p)
    except FileNotFoundError:
        _remove_bridge(p)
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
                _remove_bridge(p)
                return True
    except FileNotFoundError:  # no sandbox ever attached from this home
        _remove_bridge(p)
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
