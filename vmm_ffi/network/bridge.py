"""A root daemon's sandbox network, host side: one bridge and one nftables table per daemon home.

Everything is named after the daemon's home (``tag`` = a hash of it), so daemons on one host
never share or sweep each other's parts:

- bridge ``iii-<tag>`` with the gateway address of the daemon's subnet (``network_subnet`` in
  daemon.yaml, else the first free ``/24`` of ``10.89.0.0/16`` upwards from the tag's, checked
  against the host's routes under a host-wide lock);
- table ``ip iii-<tag>``: masquerade of the subnet, the engine's (and allowed) host loopback
  ports DNATed from the gateway to ``127.0.0.1`` for exactly the sandbox addresses that may
  reach them (set ``lo_ports``), nothing else of the host from the bridge.

The sandboxes' side (a veth pair and a lease each; attach, release, sweep) is
``vmm_ffi.network.bridge_leases``; this module makes, checks and removes what they share, and
runs the ``ip``/``nft`` tools for both.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterator

import msgspec

from vmm_ffi.network.netns import SEARCH_PATH
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


def no_ipv6(interface: str) -> None:
    """No IPv6 on ``interface`` (of the current network namespace): the bridge is IPv4 only,
    so no link-local IPv6 path leads around the IPv4 rules."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{interface}/disable_ipv6", "w") as f:
            f.write("1")
    except FileNotFoundError:
        pass  # a kernel without IPv6


def remove_bridge(p: BridgeParams) -> None:
    """The bridge, its table and its state file (nothing left of this daemon's network)."""
    bridge, table = names(p.tag)
    run(["nft", "delete", "table", "ip", table], check=False)
    run(["ip", "link", "del", bridge], check=False)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(p.state_dir, "bridge.json"))
