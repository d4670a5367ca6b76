"""Parsing allow/deny entries and compiling a policy (vmm_ffi.network.policy); enforcement is
tested from inside real sandboxes in test_network_policy."""

from __future__ import annotations

import ipaddress

import pytest

from vmm_ffi.network.policy import HostView, PolicyError, Rule, compile_policy, parse_rule

GOOD = [
    ("10.0.0.0/8", "10.0.0.0/8", None),
    ("192.0.2.7", "192.0.2.7/32", None),
    ("127.0.0.1:5432", "127.0.0.1/32", (5432, 5432)),
    ("10.1.0.0/16:8000-8100", "10.1.0.0/16", (8000, 8100)),
    ("[fd00::1]:443", "fd00::1/128", (443, 443)),
    ("fd00::/8", "fd00::/8", None),
]


@pytest.mark.parametrize(("text", "network", "ports"), GOOD, ids=[g[0] for g in GOOD])
def test_entries_parse(text: str, network: str, ports: tuple[int, int] | None) -> None:
    rule = parse_rule(text)
    assert rule == Rule(ipaddress.ip_network(network), ports)
    assert str(rule) == text


BAD = [
    ("db.example:5432", "is not an IP address or CIDR"),
    ("10.0.0.0/8:http", "port 'http' is not a number or a range"),
    ("10.0.0.1:90-80", "ports must be within 1-65535, low to high"),
    ("[fd00::1:80", "is not an address"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_entries_name_the_value(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as failed:
        parse_rule(text)
    assert repr(text) in str(failed.value) and message in str(failed.value)


def test_loopback_entries_are_forwarded_and_the_rest_become_rules() -> None:
    host = HostView(addresses=[ipaddress.ip_network("192.0.2.2")],
                    nameservers=[ipaddress.ip_address("10.255.255.53")])
    compiled = compile_policy("egress", 49134, ["127.0.0.1:5432", "10.1.0.0/16"],
                              ["203.0.113.0/24"], ["127.0.0.1:3128"], host)
    assert compiled.forward == [(3128, 3128), (5432, 5432), (49134, 49134)]
    assert not compiled.all_loopback and set(compiled.rulesets) == {4}
    rules = compiled.rulesets[4].splitlines()
    order = [rules.index(r) for r in (
        "-A OUTPUT -d 10.255.255.53/32 -p udp --dport 53 -j ACCEPT",
        "-A OUTPUT -d 203.0.113.0/24 -j iii-refuse",
        "-A OUTPUT -d 10.1.0.0/16 -j ACCEPT",
        "-A OUTPUT -d 192.0.2.2/32 -j iii-refuse",
        "-A OUTPUT -d 169.254.0.0/16 -j iii-refuse")]
    assert order == sorted(order)  # DNS, then deny, then allow, then what egress refuses
    engine = compile_policy("engine", 49134, [], [], [], host).rulesets[4].splitlines()
    assert engine[-2:] == ["-A OUTPUT -j iii-refuse", "COMMIT"]
