"""Choosing the isolation backend (``auto | libkrun | namespace``, SPEC §8) for new sandboxes.

A thin translation of ``vmm_ffi.availability.select_backend`` into daemon errors: the reason
libkrun is not used travels with the choice so every add/start can show it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal, cast

import msgspec

from daemon.errors import InvalidArgument, Unavailable
from vmm_ffi.availability import Setting, select_backend
from vmm_ffi.errors import BackendUnavailable
from vmm_ffi.network.bridge import bridge_problem
from vmm_ffi.network.helper import TUN_FIX, find_helper, find_slirp4netns, tun_problem
from vmm_ffi.params import Backend, IdShift

ISOLATION_SETTINGS = ("auto", "libkrun", "namespace")


class BackendChoice(msgspec.Struct, frozen=True, kw_only=True):
    """The backend to use and, when it is not libkrun, why (shown on every add/start)."""

    backend: Backend
    reason: str | None = None


def choose_backend(setting: str) -> BackendChoice:
    """Apply the isolation setting. Blocking (probes once per process): call via a thread.

    Raises ``InvalidArgument`` for an unknown setting, ``Unavailable`` (reason + how to fix)
    when the requested backend, or for ``auto`` every backend, cannot run here.
    """
    if setting not in ISOLATION_SETTINGS:
        raise InvalidArgument(f"isolation {setting!r} is invalid; use one of "
                              + ", ".join(ISOLATION_SETTINGS))
    try:
        backend, reason = select_backend(cast(Setting, setting))
    except BackendUnavailable as exc:
        raise Unavailable(exc.reason, exc.hint) from exc
    return BackendChoice(backend=cast(Backend, backend), reason=reason)


HOST_NETWORK_WARNING = ("network: host: the sandbox shares the host's network namespace, so "
                        "every host port, host abstract sockets and netns-scoped services are "
                        "reachable from it")


class NetworkChoice(msgspec.Struct, frozen=True, kw_only=True):
    """The network of new namespace sandboxes, its helper's binary, and a warning to show."""

    mode: Literal["host", "none", "pasta", "slirp4netns", "bridge"]
    pasta: str | None = None
    slirp4netns: str | None = None
    warning: str | None = None


def choose_network(setting: str, backend: Backend,
                   environ: Mapping[str, str] | None = None,
                   connect: str = "auto") -> NetworkChoice:
    """Apply the network policy (``auto`` = ``egress``, ``engine``, ``none``, ``host``) for a
    sandbox of ``backend``.

    libkrun brings its own network (TSI), so only namespace sandboxes get pasta (or, where
    pasta is not installed, slirp4netns); ``none`` needs no helper. Raises ``Unavailable``
    (with how to fix it) when both are missing and ``host`` was not chosen.
    """
    if backend != "namespace":
        return NetworkChoice(mode="host")
    if setting == "host":
        return NetworkChoice(mode="host", warning=HOST_NETWORK_WARNING)
    if setting == "none":
        return NetworkChoice(mode="none")
    if connect in ("auto", "bridge"):
        problem = bridge_problem()
        if problem is None:
            return NetworkChoice(mode="bridge")
        if connect == "bridge":
            raise Unavailable(f"network_backend: bridge: {problem}",
                              "run the daemon as root with nftables installed, or set "
                              "network_backend: auto in daemon.yaml")
    helper = find_helper() if environ is None else find_helper(environ)
    if helper is None:
        raise Unavailable("pasta is not installed (nor slirp4netns): namespace sandboxes need "
                          "one for a network stack of their own",
                          "apt-get install passt, or set `network: host` in daemon.yaml to "
                          "share the host's network on purpose")
    problem = tun_problem()
    if problem is not None:
        raise Unavailable(f"namespace sandboxes cannot have a network of their own: {problem}",
                          TUN_FIX)
    mode, binary = helper
    if connect == "slirp4netns":
        slirp = find_slirp4netns() if environ is None else find_slirp4netns(environ)
        if slirp is None:
            raise Unavailable("network_backend: slirp4netns: slirp4netns is not installed",
                              "apt-get install slirp4netns, or set network_backend: auto")
        return NetworkChoice(mode="slirp4netns", slirp4netns=slirp)
    if mode == "slirp4netns":
        return NetworkChoice(mode="slirp4netns", slirp4netns=binary)
    return NetworkChoice(mode="pasta", pasta=binary)


def choose_ids(backend: Backend) -> IdShift | None:
    """Where a root daemon's namespace sandboxes run their ids (``daemon.sandboxes.subids``);
    None for libkrun (a VM) and for a non-root daemon (its uid is the sandbox's root).
    Blocking (reads, and once writes, /etc/subuid): call via a thread. Raises ``Unavailable``.
    """
    if backend != "namespace" or os.geteuid() != 0:
        return None
    from daemon.sandboxes.subids import ensure_subordinate_range, ensure_user

    ensure_user()
    return ensure_subordinate_range()
