"""The ``network:`` setting of daemon.yaml (the default) and of a worker's config entry.

Either a policy name or a mapping::

    network: egress                      # none | engine | egress (default) | host; auto = egress
    network:
      policy: egress
      allow: [127.0.0.1:5432, 10.1.0.0/16:8000-8100]
      deny: [203.0.113.0/24]

What each policy reaches is ``vmm_ffi.network.policy``'s. A worker's ``policy`` replaces the
daemon's; its ``allow`` / ``deny`` are added to the daemon's. ``host`` takes no lists (there is
no namespace of the sandbox's own to filter). Every problem is a ``ValueError`` whose message
names the key and the value.
"""

from __future__ import annotations

from typing import Any

import msgspec

from vmm_ffi.network.policy import PolicyError, parse_rules

POLICIES = ("none", "engine", "egress", "host")
ALIASES = {"auto": "egress"}  # the setting's value before policies existed
KEYS = ("policy", "allow", "deny")


class NetworkSetting(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed ``network:`` value; ``policy`` None = the daemon's (a worker entry's lists)."""

    policy: str | None = None
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


def parse_network(value: Any, where: str = "network") -> NetworkSetting:
    """``"egress"`` or ``{"policy": ..., "allow": [...], "deny": [...]}`` → ``NetworkSetting``.

    Raises ``ValueError`` naming ``where`` (``network.allow[1]``), the value and the fix.
    """
    if isinstance(value, str):
        return NetworkSetting(policy=_policy(value, where))
    if not isinstance(value, dict):  # one error type for every bad value: ValueError
        raise ValueError(  # noqa: TRY004
            f"{where} must be one of {', '.join(POLICIES)} or a mapping with "
            f"{', '.join(KEYS)} (got {value!r})")
    unknown = sorted(set(value) - set(KEYS))
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(KEYS)})")
    policy = None if value.get("policy") is None else _policy(value["policy"], f"{where}.policy")
    lists = {key: _entries(value.get(key), f"{where}.{key}") for key in ("allow", "deny")}
    if policy == "host" and (lists["allow"] or lists["deny"]):
        raise ValueError(f"{where}: allow/deny need a network namespace of the sandbox's own, "
                         "which `policy: host` does not have; remove them or use egress")
    loopback_deny = [e for e in lists["deny"] if e.startswith(("127.", "[::1]", "::1"))]
    if loopback_deny:
        raise ValueError(f"{where}.deny: {loopback_deny[0]!r}: host loopback ports are closed "
                         "unless allowed; remove it from deny")
    return NetworkSetting(policy=policy, allow=lists["allow"], deny=lists["deny"])


def _policy(value: Any, where: str) -> str:
    name = ALIASES.get(value, value) if isinstance(value, str) else value
    if name not in POLICIES:
        raise ValueError(f"{where}: {value!r} is not a network policy; use one of "
                         f"{', '.join(POLICIES)}")
    return str(name)


def _entries(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
        raise ValueError(f"{where} must be a list of addresses like 127.0.0.1:5432 or "
                         f"10.0.0.0/8 (got {value!r})")
    try:
        parse_rules(value, where)
    except PolicyError as exc:
        raise ValueError(str(exc)) from None
    return tuple(e.strip() for e in value)


def merge(default: NetworkSetting, worker: NetworkSetting | None) -> NetworkSetting:
    """The worker's policy (else the daemon's) with both lists."""
    if worker is None:
        return default
    merged = NetworkSetting(policy=worker.policy or default.policy,
                            allow=default.allow + worker.allow, deny=default.deny + worker.deny)
    if merged.policy == "host" and (merged.allow or merged.deny):
        raise ValueError("network: allow/deny (daemon.yaml and the worker's entry) need a "
                         "network namespace of the sandbox's own, which `policy: host` does "
                         "not have; remove them or use egress")
    return merged
