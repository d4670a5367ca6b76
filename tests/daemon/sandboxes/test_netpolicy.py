"""A worker's policy for its launcher: the engine's port, the auto-allowed proxy and mirror."""

from __future__ import annotations

import pytest

from daemon.config.network import NetworkSetting, merge, parse_network
from daemon.errors import InvalidArgument
from daemon.sandboxes.netpolicy import build_policy


def test_a_loopback_engine_is_forwarded_and_a_loopback_proxy_allowed() -> None:
    policy = build_policy(NetworkSetting(policy="egress", allow=("10.1.0.0/16",)),
                          "ws://127.0.0.1:49134", None,
                          {"HTTPS_PROXY": "http://127.0.0.1:3128", "NO_PROXY": "x"})
    assert (policy.mode, policy.engine_port) == ("egress", 49134)
    assert policy.allow == ["10.1.0.0/16"]
    assert policy.auto_allow == ["127.0.0.1:3128"]


def test_a_remote_engine_and_the_mirror_are_allowed_at_their_addresses() -> None:
    policy = build_policy(NetworkSetting(policy="engine"), "ws://192.0.2.50:49134",
                          "192.0.2.60:5000", {"HTTP_PROXY": "http://[fd00::9]:8080"})
    assert policy.engine_port is None
    assert policy.auto_allow == ["192.0.2.50:49134", "192.0.2.60:5000", "[fd00::9]:8080"]


def test_a_name_that_does_not_resolve_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="registry_mirror: cannot resolve "
                                              "'mirror.invalid'"):
        build_policy(NetworkSetting(), "ws://127.0.0.1:1", "https://mirror.invalid", {})


def test_a_worker_policy_replaces_the_daemons_and_adds_to_its_lists() -> None:
    daemon = parse_network({"policy": "egress", "allow": ["127.0.0.1:5432"]})
    worker = parse_network({"policy": "engine", "deny": ["10.0.0.0/8"]})
    assert merge(daemon, worker) == NetworkSetting(policy="engine", allow=("127.0.0.1:5432",),
                                                   deny=("10.0.0.0/8",))
    assert merge(daemon, None) == daemon
    with pytest.raises(ValueError, match="need a network namespace of the sandbox's own"):
        merge(daemon, parse_network("host"))
