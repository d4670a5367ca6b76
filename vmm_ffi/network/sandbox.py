"""One namespace sandbox's own network, from plan to stop: its policy (``vmm_ffi.network.policy``)
and what connects it: nothing (``none``), a helper process (pasta, slirp4netns:
``vmm_ffi.network.helper``) or a root daemon's bridge (``vmm_ffi.network.bridge``).

The launcher calls, in order: ``SandboxNetwork.plan()`` while still in the host's namespaces
(reads the host's addresses, forks the helper or the bridge attach), ``after_unshare()`` once
it has its new namespaces, ``ready()`` after the root is built, ``configure_in_init`` in the
sandbox init (loopback forwards, rules, capabilities dropped), ``wait_sandbox()`` while the
sandbox runs (a helper that dies ends it), ``stop()`` at the end.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import msgspec

from vmm_ffi.errors import SetupFailed
from vmm_ffi.network.bridge import SANDBOX_IF, BridgeError
from vmm_ffi.network.helper import (
    PASTA_HINT,
    SLIRP_GATEWAY,
    SLIRP_LOG,
    SLIRP_TAP,
    NetworkHelper,
    find_pasta,
    find_slirp4netns,
)
from vmm_ffi.network.netns import (
    allow_localnet,
    allow_ping,
    drop_net_admin,
    load_rules,
    loopback_up,
)
from vmm_ffi.network.policy import (
    CompiledPolicy,
    HostView,
    PolicyError,
    compile_policy,
    describe,
    dnat_ruleset,
)
from vmm_ffi.params import BridgeParams, LaunchParams

if TYPE_CHECKING:
    from vmm_ffi.network.bridge_leases import BridgeAttach


class SandboxNetwork:
    """The policy in force and the helper or bridge attach of one sandbox."""

    def __init__(self, params: LaunchParams) -> None:
        self.params = params
        self.helper: NetworkHelper | None = None
        self.bridge: BridgeAttach | None = None
        self.host: HostView | None = None
        self.policy: CompiledPolicy | None = None  # None: "none" (loopback only)
        self.gateway: str | None = None  # the bridge's: where 127.0.0.1's forwards go
        self.helper_ended: str | None = None  # why the helper ended before the sandbox

    @classmethod
    def plan(cls, params: LaunchParams, log_fd: int) -> SandboxNetwork | None:
        """Before the launcher leaves the host's namespaces: None for the host's network,
        else the policy compiled and the helper (or bridge attach) forked. Raises
        ``SetupFailed``."""
        if params.backend != "namespace" or params.network == "host":
            return None
        net = cls(params)
        pol = params.policy
        if pol.mode != "none" and params.network != "none":  # "none": loopback only
            net.host = HostView.probe()
            gateway = SLIRP_GATEWAY if params.network == "slirp4netns" else None
            try:
                net.policy = compile_policy(pol.mode, pol.engine_port, pol.allow, pol.deny,
                                            pol.auto_allow, net.host, gateway)
            except PolicyError as exc:
                raise SetupFailed("network policy", str(exc)) from exc
            net._fork(log_fd, net.policy)
        return net

    def _fork(self, log_fd: int, policy: CompiledPolicy) -> None:
        p = self.params
        forward, all_loopback = policy.forward, policy.all_loopback
        if p.network == "pasta":
            pasta = p.pasta or find_pasta()
            if pasta is None:
                raise SetupFailed("network", f"pasta is not installed; {PASTA_HINT}")
            self.helper = NetworkHelper.fork(pasta, log_fd, forward=forward,
                                             all_loopback=all_loopback)
        elif p.network == "bridge":
            if p.bridge is None or p.id_shift is None or os.geteuid() != 0:
                raise SetupFailed("network", "the bridge needs a root launcher with id_shift "
                                  "and bridge params (a root daemon)")
            # only a root daemon's bridge sandboxes need it: not imported at every start
            from vmm_ffi.network.bridge_leases import BridgeAttach
            self.bridge = BridgeAttach.fork(p.bridge, forward)
        elif p.network == "slirp4netns":
            slirp = p.slirp4netns or find_slirp4netns()
            if slirp is None:
                raise SetupFailed("network", f"slirp4netns is not installed; {PASTA_HINT}")
            # its chatter (tapfd, a warning about the host loopback we rely on) stays out of
            # the worker log: errors are named from this file
            helper_log = os.path.join(os.path.dirname(p.exit_path), SLIRP_LOG)
            fd = os.open(helper_log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                         0o640)
            try:
                self.helper = NetworkHelper.fork(slirp, fd, mode="slirp4netns",
                                                 log_path=helper_log, forward=forward,
                                                 all_loopback=all_loopback)
            finally:
                os.close(fd)

    @property
    def bridge_params(self) -> BridgeParams | None:
        """What the exit recorder releases (None: no bridge)."""
        return self.params.bridge if self.bridge is not None else None

    @property
    def mode(self) -> Literal["none", "pasta", "slirp4netns", "bridge"]:
        """What ``LaunchResult.network`` says."""
        if self.helper is not None:
            return self.helper.mode
        return "bridge" if self.bridge is not None else "none"

    def describe(self) -> str:
        pol = self.params.policy
        return describe(pol.mode, pol.engine_port, pol.allow, pol.deny, pol.auto_allow)

    def after_unshare(self) -> None:
        """The helper joins our new namespaces / the bridge attach starts (while we build the
        root)."""
        if self.helper is not None:
            self.helper.attach()
        if self.bridge is not None:
            self.bridge.go()

    def ready(self) -> None:
        """The interface is up; with the bridge, the rules then know its gateway and subnet."""
        if self.helper is not None:
            self.helper.wait_ready()
        if self.bridge is None:
            return
        try:
            gateway = self.bridge.wait()
        except BridgeError as exc:
            raise SetupFailed("network", f"bridge: {exc}") from exc
        self.gateway = str(gateway.ip)
        pol = self.params.policy
        if self.policy is not None and self.host is not None:  # IPv4 only on the bridge
            self.policy = compile_policy(pol.mode, pol.engine_port, pol.allow, pol.deny,
                                         pol.auto_allow,
                                         msgspec.structs.replace(self.host, ipv6=False),
                                         self.gateway, refuse=[gateway.network])

    def configure_in_init(self) -> str | None:
        """In the sandbox init, before its root is entered (the host's files, root of the
        namespace): loopback forwards, the policy's rules, then no CAP_NET_ADMIN/NET_RAW for
        anyone after us. Returns a note for the log."""
        if self.policy is None:
            loopback_up()
        else:
            rulesets = dict(self.policy.rulesets)
            dnat = self._dnat()
            if dnat is not None:  # the engine at 127.0.0.1, through the gateway
                allow_localnet()
                rulesets[4] = dnat + rulesets[4]
            load_rules(rulesets)  # one iptables-restore per IP version
        allow_ping()
        drop_net_admin()
        return None

    def _dnat(self) -> str | None:
        if self.policy is None:
            return None
        if self.gateway is not None:  # the bridge
            return dnat_ruleset(self.policy.forward, self.gateway, SANDBOX_IF)
        if self.helper is not None and self.helper.mode == "slirp4netns":
            forward = self.helper.forward
            ranges = sorted((port, port) for port in forward) if isinstance(forward, set) \
                else forward
            return dnat_ruleset(ranges, SLIRP_GATEWAY, SLIRP_TAP)
        return None

    def wait_sandbox(self, child: int, log: Callable[[str], None]) -> int:
        """Wait for the sandbox (its wait status); a helper that ends first is logged and ends
        it (the sandbox is cut off from the engine for good), so the supervisor restarts it."""
        helper = self.helper
        if helper is None or not sys.platform.startswith("linux"):
            return os.waitpid(child, 0)[1]
        sandbox_fd, helper_fd = os.pidfd_open(child), os.pidfd_open(helper.pid)
        try:
            while True:
                ready, _, _ = select.select([sandbox_fd, helper_fd], [], [])
                if sandbox_fd in ready:
                    return os.waitpid(child, 0)[1]
                status = helper.exited()
                if status is not None:
                    break
        finally:
            os.close(sandbox_fd)
            os.close(helper_fd)
        self.helper_ended = f"network helper {helper.mode} ended: {_how(status)}"
        log(f"{self.helper_ended}; ending the sandbox")
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return os.waitpid(child, 0)[1]

    def stop(self) -> None:
        """End the helper (the namespace it served is gone or going)."""
        if self.helper is not None:
            self.helper.stop()
            self.helper = None


def _how(status: int) -> str:
    """A wait status in words: ``killed by signal 9`` or ``exit code 1``."""
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
