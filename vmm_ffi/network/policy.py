"""What a namespace sandbox may reach: the network policy, parsed and turned into rules.

Policies (``NetworkPolicy.mode``), least to most:

- ``none``: loopback only (no helper process, nothing leaves the namespace);
- ``engine``: the engine's port at ``127.0.0.1`` plus DNS, nothing else;
- ``egress`` (default): the engine plus outbound internet through NAT, but nothing of the host
  (no host loopback port but the engine's, none of the host's addresses or connected subnets),
  no link-local (``169.254.169.254``), no private or shared ranges unless allowed.

``allow`` / ``deny`` entries are ``<IP or CIDR>[:<port>[-<port>]]`` (IPv6 in brackets when a
port follows: ``[fd00::1]:80``). An allowed host loopback entry (``127.0.0.1:5432``) is forwarded
into the sandbox's ``127.0.0.1`` like the engine's port; every other entry becomes a rule.
Deny wins over allow; the engine, the daemon's proxy and registry mirror (``auto_allow``) and
DNS win over deny, so installs keep working under every policy but ``none``.

Enforcement: the helper (pasta, slirp4netns) forwards only the allowed loopback ports, and the
sandbox init, still root of the namespace and on the host's files, loads the rulesets compiled
here into the sandbox's own network namespace (``vmm_ffi.network.netns``), then drops
``CAP_NET_ADMIN`` from the bounding set, so no sandbox process (workload or ``exec``) can change
the rules or the routes.
"""

from __future__ import annotations

# Imported here, not where used: a launcher on shifted ids may not read the stdlib later.
import ipaddress
import itertools
import os
from collections.abc import Iterable

import msgspec

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PORT_MAX = 65535
LOOPBACK4 = ipaddress.ip_network("127.0.0.0/8")
LOOPBACK6 = ipaddress.ip_network("::1/128")
# egress refuses these unless allowed: private, shared (CGNAT), link-local (cloud metadata at
# 169.254.169.254), "this network", multicast and reserved, and their IPv6 counterparts.
REFUSED_BY_EGRESS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
    "fc00::/7", "fe80::/10", "ff00::/8", "::ffff:0:0/96"))


class PolicyError(ValueError):
    """An allow/deny entry or a policy that cannot be used; the message names the value."""


class Rule(msgspec.Struct, frozen=True):
    """One allow/deny entry: a network and, optionally, a port range (TCP and UDP)."""

    network: IPNetwork
    ports: tuple[int, int] | None = None

    @property
    def version(self) -> int:
        return self.network.version

    @property
    def is_loopback(self) -> bool:
        net = self.network
        if isinstance(net, ipaddress.IPv4Network):
            return net.subnet_of(ipaddress.IPv4Network("127.0.0.0/8"))
        return net == LOOPBACK6

    def __str__(self) -> str:
        net = str(self.network.network_address) if self.network.prefixlen == \
            self.network.max_prefixlen else str(self.network)
        if self.ports is None:
            return net
        lo, hi = self.ports
        port = str(lo) if lo == hi else f"{lo}-{hi}"
        return f"[{net}]:{port}" if self.version == 6 else f"{net}:{port}"


FORMS = ("10.0.0.0/8, 192.0.2.7, 127.0.0.1:5432, 10.1.0.0/16:8000-8100, [fd00::1]:443 "
         "or fd00::/8")


def parse_rule(text: str) -> Rule:
    """``"10.0.0.0/8"``, ``"127.0.0.1:5432"``, ``"[fd00::1]:80-90"`` → ``Rule``.

    Raises ``PolicyError`` naming the value and the accepted forms (hostnames are not
    resolved here: the daemon resolves them first).
    """
    raw = text.strip()
    address, port = raw, None
    if raw.startswith("["):
        address, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise PolicyError(f"{text!r} is not an address: use one of {FORMS}")
        port = rest[1:] if rest else None
    elif raw.count(":") == 1:
        address, port = raw.split(":")
    try:
        network = ipaddress.ip_network(address, strict=False)
    except ValueError as exc:
        raise PolicyError(f"{text!r} is not an IP address or CIDR ({exc}): use one of "
                          f"{FORMS}") from exc
    return Rule(network, None if port is None else parse_ports(port, text))


def parse_ports(port: str, text: str) -> tuple[int, int]:
    """``"80"`` → (80, 80), ``"8000-8100"`` → (8000, 8100); raises ``PolicyError``."""
    lo_text, _, hi_text = port.partition("-")
    try:
        lo = int(lo_text)
        hi = int(hi_text) if hi_text else lo
    except ValueError:
        raise PolicyError(f"{text!r}: port {port!r} is not a number or a range like "
                          "8000-8100") from None
    if not 1 <= lo <= hi <= PORT_MAX:
        raise PolicyError(f"{text!r}: ports must be within 1-{PORT_MAX}, low to high")
    return lo, hi


def parse_rules(entries: Iterable[str], where: str) -> list[Rule]:
    """Every entry of an allow/deny list; the error names ``where`` (``network.allow[2]``)."""
    rules = []
    for i, entry in enumerate(entries):
        try:
            rules.append(parse_rule(entry))
        except PolicyError as exc:
            raise PolicyError(f"{where}[{i}]: {exc}") from None
    return rules


class HostView(msgspec.Struct):
    """What the launcher reads in the host's network namespace before it leaves it."""

    addresses: list[IPNetwork] = []  # /32, /128 and connected nets
    nameservers: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    ipv6: bool = False

    @classmethod
    def probe(cls, resolv_conf: str = "/etc/resolv.conf") -> HostView:
        view = cls(addresses=host_networks(), nameservers=nameservers(resolv_conf))
        view.ipv6 = os.path.exists("/proc/net/if_inet6")
        return view


def host_networks(net_dir: str = "/proc/self/net") -> list[IPNetwork]:
    """The host's own addresses and directly connected IPv4 subnets (not loopback)."""
    found: list[IPNetwork] = []
    try:
        with open(os.path.join(net_dir, "route")) as f:
            for line in f.read().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 7 and cols[2] == "00000000" and cols[1] != "00000000":
                    dest = ipaddress.IPv4Address(bytes.fromhex(cols[1])[::-1])
                    mask = ipaddress.IPv4Address(bytes.fromhex(cols[7])[::-1])
                    found.append(ipaddress.ip_network(f"{dest}/{mask}", strict=False))
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(net_dir, "fib_trie")) as f:
            lines = f.read().splitlines()
        for prev, line in itertools.pairwise(lines):
            if "/32 host LOCAL" in line:
                address = ipaddress.ip_address(prev.split()[-1])
                if address not in LOOPBACK4:
                    found.append(ipaddress.ip_network(address))
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(os.path.join(net_dir, "if_inet6")) as f:
            for line in f.read().splitlines():
                address6 = ipaddress.IPv6Address(bytes.fromhex(line.split()[0]))
                if not address6.is_loopback:
                    found.append(ipaddress.ip_network(address6))
    except (OSError, ValueError, IndexError):
        pass
    return sorted(set(found), key=lambda n: (n.version, str(n)))


def nameservers(path: str = "/etc/resolv.conf") -> list[ipaddress.IPv4Address |
                                                          ipaddress.IPv6Address]:
    """The ``nameserver`` addresses of the resolv.conf the sandbox gets (a copy of the host's)."""
    found = []
    try:
        with open(path) as f:
            for line in f:
                cols = line.split()
                if len(cols) >= 2 and cols[0] == "nameserver":
                    try:
                        found.append(ipaddress.ip_address(cols[1].split("%")[0]))
                    except ValueError:
                        continue
    except OSError:
        pass
    return found


class CompiledPolicy(msgspec.Struct):
    """A policy turned into what enforces it: the loopback ports to forward, two rulesets."""

    forward: list[tuple[int, int]]  # host loopback port ranges shown at the sandbox's 127.0.0.1
    all_loopback: bool  # an allow entry opened every host loopback port
    rulesets: dict[int, str]  # ip version -> iptables-restore text


def compile_policy(mode: str, engine_port: int | None, allow: Iterable[str],
                   deny: Iterable[str], auto_allow: Iterable[str], host: HostView,
                   gateway: str | None = None,
                   refuse: Iterable[IPNetwork] = ()) -> CompiledPolicy:
    """Rules for ``mode`` (``engine`` | ``egress``); ``gateway``: where the forwarded loopback
    ports really go (slirp4netns's ``10.0.2.2``; pasta forwards at 127.0.0.1 itself).

    Raises ``PolicyError`` for an entry that does not parse.
    """
    allowed = parse_rules(allow, "network.allow")
    denied = parse_rules(deny, "network.deny")
    auto = parse_rules(auto_allow, "network.auto_allow")
    forward, all_loopback = _loopback_forwards(engine_port, auto + allowed)
    rulesets = {}
    for version in (4, 6):
        if version == 6 and not host.ipv6:
            continue
        lines = _preamble_lines(version)
        if version == 4 and gateway is not None:
            lines += _gateway_lines(gateway, forward, all_loopback)
        lines += _nameserver_lines(host, version)
        lines += _lines_for(auto, version, "ACCEPT")
        lines += _lines_for(denied, version, "iii-refuse")
        lines += _lines_for(allowed, version, "ACCEPT")
        lines += _last_lines(mode, version, host, refuse)
        lines.append("COMMIT")
        rulesets[version] = "\n".join(lines) + "\n"
    return CompiledPolicy(forward, all_loopback, rulesets)


def _loopback_forwards(engine_port: int | None,
                       rules: list[Rule]) -> tuple[list[tuple[int, int]], bool]:
    """The host loopback port ranges to forward, and whether an entry opened all of them."""
    forward: list[tuple[int, int]] = [] if engine_port is None else [(engine_port, engine_port)]
    forward += [rule.ports for rule in rules if rule.is_loopback and rule.ports is not None]
    all_loopback = any(rule.is_loopback and rule.ports is None for rule in rules)
    return sorted(set(forward)), all_loopback


def _preamble_lines(version: int) -> list[str]:
    """Chains, the ``iii-refuse`` target, loopback and established traffic (and IPv6's NDP)."""
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]",
             ":OUTPUT ACCEPT [0:0]", ":iii-refuse - [0:0]",
             "-A iii-refuse -p tcp -j REJECT --reject-with tcp-reset",
             "-A iii-refuse -j REJECT", "-A OUTPUT -o lo -j ACCEPT",
             # answers to what came in (another sandbox its policy let connect)
             "-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"]
    if version == 6:  # neighbour discovery (to ff02::/16 and fe80::/10) keeps IPv6 working
        lines += [f"-A OUTPUT -p ipv6-icmp --icmpv6-type {kind} -j ACCEPT" for kind in
                  ("neighbour-solicitation", "neighbour-advertisement",
                   "router-solicitation")]
    return lines


def _gateway_lines(gateway: str, forward: list[tuple[int, int]], all_loopback: bool) -> list[str]:
    gw = Rule(ipaddress.ip_network(gateway))
    gateway_rules = [gw] if all_loopback else [Rule(gw.network, r) for r in forward]
    return [line for rule in gateway_rules for line in _rule_lines(rule, "ACCEPT", tcp_only=True)]


def _nameserver_lines(host: HostView, version: int) -> list[str]:
    dns = [Rule(ipaddress.ip_network(s), (53, 53)) for s in host.nameservers if s.version == version]
    return [line for rule in dns for line in _rule_lines(rule, "ACCEPT")]


def _last_lines(mode: str, version: int, host: HostView, refuse: Iterable[IPNetwork]) -> list[str]:
    """``engine``: refuse the rest; ``egress``: refuse the host's and the private networks."""
    if mode == "engine":
        return ["-A OUTPUT -j iii-refuse"]
    own = [n for n in [*host.addresses, *refuse] if n.version == version]
    refused = [n for n in REFUSED_BY_EGRESS if n.version == version]
    return _lines_for([Rule(n) for n in own + refused], version, "iii-refuse")


def _lines_for(rules: Iterable[Rule], version: int, target: str) -> list[str]:
    out: list[str] = []
    for rule in rules:
        if rule.version == version and not rule.is_loopback:
            out += _rule_lines(rule, target)
    return out


def _rule_lines(rule: Rule, target: str, tcp_only: bool = False) -> list[str]:
    dest = f"-A OUTPUT -d {rule.network}"
    if rule.ports is None:
        return [f"{dest} -j {target}"]
    lo, hi = rule.ports
    port = str(lo) if lo == hi else f"{lo}:{hi}"
    protocols = ("tcp",) if tcp_only else ("tcp", "udp")
    return [f"{dest} -p {p} --dport {port} -j {target}" for p in protocols]


def dnat_ruleset(ports: Iterable[tuple[int, int]], gateway: str, interface: str) -> str:
    """The ``nat`` table that shows ``gateway:<port>`` (slirp4netns's host loopback, the
    bridge's gateway) at the sandbox's ``127.0.0.1:<port>`` for each forwarded port range
    (with ``route_localnet``, see ``allow_localnet``)."""
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]"]
    for lo, hi in ports:
        port = str(lo) if lo == hi else f"{lo}:{hi}"
        lines.append(f"-A OUTPUT -d 127.0.0.1/32 -p tcp --dport {port} -j DNAT "
                     f"--to-destination {gateway}")
    lines += [f"-A POSTROUTING -s 127.0.0.0/8 -o {interface} -j MASQUERADE", "COMMIT"]
    return "\n".join(lines) + "\n"


def describe(mode: str, engine_port: int | None, allow: Iterable[str], deny: Iterable[str],
             auto_allow: Iterable[str]) -> str:
    """One line for ``inspect``: what the policy in force reaches."""
    reach = {"none": "loopback only",
             "engine": "the engine's port and DNS only",
             "egress": "the engine, DNS and outbound internet; no host, private or link-local "
                       "address"}.get(mode, mode)
    parts = [f"{mode} ({reach})"]
    if engine_port is not None and mode != "none":
        parts.append(f"engine port {engine_port}")
    for label, entries in (("allow", allow), ("deny", deny), ("auto-allowed", auto_allow)):
        listed = list(entries)
        if listed and mode != "none":
            parts.append(f"{label} {', '.join(listed)}")
    return "; ".join(parts)
