"""The sandbox's own network namespace, connected by pasta (Debian ``passt``), as rootless podman;
slirp4netns is the second choice where pasta is not installed.

A namespace sandbox that shared the host's network namespace could reach everything scoped by
it rather than by the file system: abstract unix sockets (a shim's, a desktop bus), netlink,
the host's interfaces. So the launcher unshares a network namespace along with the others and a
pasta process, its child, connects it. What the sandbox may reach is its policy's
(``vmm_ffi.network.policy``; ``egress`` by default):

- outbound traffic (installs through the host's proxy) leaves through pasta's NAT, filtered by
  the policy's rules in the sandbox's own namespace;
- ``-T <ports>``: only the engine's port and allowed host loopback ports are forwarded from
  the namespace's own ``127.0.0.1`` (``-T auto`` only when ``127.0.0.1`` itself is allowed), so
  the engine at ``ws://127.0.0.1:49134`` is reached as under libkrun's TSI, with no ``III_URL``
  rewriting; ``--no-map-gw``: the gateway address is not a back door to the host's loopback;
- ``-t none -u none``: nothing of the sandbox is published on the host.

slirp4netns (second choice) gives the same isolation and the same outbound NAT; it reaches the
host's loopback at the gateway ``10.0.2.2``, so the sandbox init (root of the new user + network
namespaces, still seeing the host's files) adds an ``iptables`` DNAT of ``127.0.0.1:<port>`` to
``10.0.2.2:<port>`` for the engine's and the allowed loopback ports (``route_localnet`` + a
MASQUERADE of the loopback source); the policy's rules refuse every other port of
``10.0.2.2``. UDP is not forwarded from ``127.0.0.1``.

Process model: ``NetworkHelper.fork()`` runs before the launcher unshares (the child stays in the
host's namespaces, with PDEATHSIG=SIGKILL so it dies with the launcher); ``attach()``, once the
launcher is in its new namespaces, lets it exec pasta aimed at the launcher's pid;
``wait_ready()`` waits until pasta has configured the interface and forwards the engine's port.
The launcher watches the helper (``pidfd``) while the sandbox runs: a helper that ends is
logged and ends the sandbox, so the supervisor restarts it. The launcher stops the helper when
the sandbox ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Mapping
from typing import Literal

from vmm_ffi import syscalls as sc
from vmm_ffi.errors import SetupFailed
from vmm_ffi.network.netns import SEARCH_PATH

NetworkMode = Literal["host", "pasta", "slirp4netns"]
HelperMode = Literal["pasta", "slirp4netns"]
PASTA_READY_TIMEOUT_S = 5.0  # interface configured and the host's bound ports forwarded
PASTA_STOP_TIMEOUT_S = 2.0
_POLL_S = 0.002
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp
PASTA_HINT = ("install pasta (`apt-get install passt`), or set `network: host` in daemon.yaml "
              "to share the host's network on purpose")
SLIRP_TAP = "tap0"
SLIRP_LOG = "slirp4netns.log"  # in the sandbox's state dir
SLIRP_GATEWAY = "10.0.2.2"  # slirp4netns's address of the host's loopback
IPTABLES = ("iptables-nft", "iptables")  # the nft flavour: no /run/xtables.lock to open
IPTABLES_TIMEOUT_S = 5.0


def find_pasta(environ: Mapping[str, str] = os.environ) -> str | None:
    """Path of the ``pasta`` binary (``III_PASTA`` overrides the PATH search), or None."""
    explicit = environ.get("III_PASTA")
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    return shutil.which("pasta", path=environ.get("PATH", "") + ":" + SEARCH_PATH)


def find_slirp4netns(environ: Mapping[str, str] = os.environ) -> str | None:
    """Path of the ``slirp4netns`` binary (``III_SLIRP4NETNS`` overrides the PATH search)."""
    explicit = environ.get("III_SLIRP4NETNS")
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    return shutil.which("slirp4netns", path=environ.get("PATH", "") + ":" + SEARCH_PATH)


def find_helper(environ: Mapping[str, str] = os.environ) -> tuple[HelperMode, str] | None:
    """The network helper to use: pasta, else slirp4netns (the second choice), else None."""
    pasta = find_pasta(environ)
    if pasta is not None:
        return "pasta", pasta
    slirp = find_slirp4netns(environ)
    return None if slirp is None else ("slirp4netns", slirp)


def helper_argv(mode: HelperMode, binary: str, userns_fd: int, netns_fd: int,
                exit_fd: int, forward: str = "none") -> list[str]:
    """The helper's command line, attached to the namespaces open at these fds."""
    if mode == "pasta":
        return pasta_argv(binary, userns_fd, netns_fd, forward)
    return slirp4netns_argv(binary, userns_fd, netns_fd, exit_fd)


def slirp4netns_argv(slirp: str, userns_fd: int, netns_fd: int, exit_fd: int) -> list[str]:
    """slirp4netns attached to the user + network namespaces open at these fds (the host's
    loopback stays reachable through 10.0.2.2: no ``--disable-host-loopback``).

    It ends when ``exit_fd`` (a pipe the launcher writes) reaches EOF: joining the user
    namespace changes its credentials, which clears the parent-death signal, and a launcher on
    shifted ids may not signal it.
    """
    return [slirp, "--configure", "--mtu=65520", f"--exit-fd={exit_fd}", "--netns-type=path",
            f"--userns-path=/proc/self/fd/{userns_fd}", f"/proc/self/fd/{netns_fd}", SLIRP_TAP]


def pasta_argv(pasta: str, userns_fd: int, netns_fd: int, forward: str = "none") -> list[str]:
    """pasta attached to the user + network namespaces open at these fds, forwarding the host
    loopback ports in ``forward`` (``forward_spec``) into the namespace's ``127.0.0.1``.

    Namespace files opened by us, not a pid: pasta drops CAP_SYS_PTRACE early, so it could not
    open ``/proc/<pid>/ns/*`` of a launcher that runs on shifted ids.
    """
    argv = [pasta, "--config-net", "--quiet", "--foreground", "-t", "none", "-u", "none",
            "-T", forward, "-U", "auto" if forward == "auto" else "none", "--no-map-gw"]
    if os.geteuid() == 0:  # root: pasta would drop to nobody, who may not join our namespaces
        argv += ["--runas", "0"]
    return [*argv, "--userns", f"/proc/self/fd/{userns_fd}",
            "--netns", f"/proc/self/fd/{netns_fd}"]


TUN = "/dev/net/tun"


TUN_FIX = f"`chmod 0666 {TUN}` (its usual mode), or set `network: host` in daemon.yaml"


def forward_spec(ports: list[tuple[int, int]], all_loopback: bool) -> str:
    """pasta's ``-T`` value: ``auto`` (every bound port), ``none``, or ``49134,8000-8100``."""
    if all_loopback:
        return "auto"
    if not ports:
        return "none"
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ports)


def in_ranges(port: int, ranges: list[tuple[int, int]]) -> bool:
    return any(lo <= port <= hi for lo, hi in ranges)


def tun_problem() -> str | None:
    """Why pasta (or slirp4netns) could not open the tun device for us, or None (both need it).
    The reason only: callers add ``TUN_FIX`` once, where they say how to fix it."""
    if os.access(TUN, os.R_OK | os.W_OK):
        return None
    return f"pasta needs {TUN}, which uid {os.geteuid()} may not open"


def listening_tcp_ports(net_dir: str = "/proc/self/net") -> set[int]:
    """TCP ports listened on in the current network namespace (IPv4 and IPv6)."""
    ports: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            with open(os.path.join(net_dir, name)) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == _LISTEN:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def has_default_route(net_dir: str = "/proc/self/net") -> bool:
    """Whether the current network namespace has an IPv4 default route (pasta configured it)."""
    try:
        with open(os.path.join(net_dir, "route")) as f:
            return any(line.split()[1] == "00000000" for line in f.read().splitlines()[1:])
    except (OSError, IndexError):
        return False


class NetworkHelper:
    """The pasta (or slirp4netns) process of one sandbox, from fork (before unshare) to stop."""

    def __init__(self, pid: int, go_w: int, err_r: int, host_ports: set[int],
                 mode: HelperMode = "pasta", log_path: str | None = None) -> None:
        self.pid, self._go_w, self._err_r, self.host_ports = pid, go_w, err_r, host_ports
        self.mode: HelperMode = mode
        self.log_path = log_path  # where the helper's output goes, when not the worker log
        self._status: int | None = None  # the helper's wait status once reaped
        self._exit_w: int | None = None  # slirp4netns's --exit-fd: closing it ends the helper
        # what slirp4netns's DNAT sends to the gateway: port ranges (or the ports bound now)
        self.forward: list[tuple[int, int]] | set[int] = []

    @classmethod
    def fork(cls, pasta: str, log_fd: int, mode: HelperMode = "pasta",
             log_path: str | None = None, forward: list[tuple[int, int]] | None = None,
             all_loopback: bool = False) -> NetworkHelper:
        """Fork the helper (in the host's namespaces) that will run ``pasta`` (or, with
        ``mode="slirp4netns"``, that binary), forwarding the host loopback port ranges in
        ``forward`` (every bound one with ``all_loopback``); raises ``SetupFailed`` when the
        tun device is not ours to open."""
        problem = tun_problem()
        if problem is not None:
            raise SetupFailed("network", f"{problem}: {TUN_FIX}")
        ranges = forward or []
        listening = listening_tcp_ports()
        host_ports = listening if all_loopback else \
            {port for port in listening if in_ranges(port, ranges)}
        spec = forward_spec(ranges, all_loopback)
        target = os.getpid()
        go_r, go_w = os.pipe()
        err_r, err_w = os.pipe()
        exit_r, exit_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child execs or _exits
            try:
                os.close(go_w)
                os.close(err_r)
                os.close(exit_w)
                os.set_inheritable(exit_r, True)
                sc.set_parent_death_signal(signal.SIGKILL)
                if os.read(go_r, 1) != b"1":
                    os._exit(0)  # the launcher gave up before attaching
                # pasta refuses to start when SIGPIPE is already ignored (Python ignores it)
                signal.signal(signal.SIGPIPE, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                userns = os.open(f"/proc/{target}/ns/user", os.O_RDONLY)
                netns = os.open(f"/proc/{target}/ns/net", os.O_RDONLY)
                os.set_inheritable(userns, True)
                os.set_inheritable(netns, True)
                os.dup2(log_fd, 1)
                os.dup2(log_fd, 2)
                os.execv(pasta, helper_argv(mode, pasta, userns, netns, exit_r, spec))
            except OSError as exc:
                os.write(err_w, f"exec {pasta}: {exc.strerror}".encode())
            os._exit(127)
        os.close(go_r)
        os.close(err_w)
        os.close(exit_r)
        helper = cls(pid, go_w, err_r, host_ports, mode, log_path)
        helper._exit_w = exit_w
        helper.forward = host_ports if all_loopback else ranges
        return helper

    def attach(self) -> None:
        """Let the helper join our (new) namespaces; raises ``SetupFailed`` if it cannot start."""
        os.write(self._go_w, b"1")
        os.close(self._go_w)
        error = os.read(self._err_r, 4096).decode(errors="replace")  # EOF: exec succeeded
        os.close(self._err_r)
        if error:
            raise SetupFailed("network", f"cannot run {self.mode} ({error}); {PASTA_HINT}")

    def wait_ready(self, timeout: float = PASTA_READY_TIMEOUT_S) -> None:
        """Wait for the default route and the forwards of the host's bound ports.

        Raises ``SetupFailed`` when the helper exits or the interface never comes up; ports that
        are still missing at the deadline are left to pasta's rescan (the route is what
        matters).
        """
        deadline = time.monotonic() + timeout
        while not has_default_route():
            status = self.exited()
            if status is not None or time.monotonic() > deadline:
                how = "timed out" if status is None else \
                    f"{self.mode} exited with code {os.waitstatus_to_exitcode(status)}"
                raise SetupFailed("network", f"{self.mode} did not configure the sandbox's "
                                  f"network ({how}); see {self.log_path or 'the worker log'}")
            time.sleep(_POLL_S)
        while self.mode == "pasta" and not self.host_ports <= listening_tcp_ports() \
                and time.monotonic() < deadline:
            time.sleep(_POLL_S)

    def exited(self) -> int | None:
        """The helper's wait status if it has exited (reaped here), else None."""
        if self._status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._status = status
        return self._status

    def stop(self) -> None:
        """SIGTERM the helper, SIGKILL after a grace period, reap it."""
        if self._exit_w is not None:
            os.close(self._exit_w)
            self._exit_w = None
        if self._status is not None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        except PermissionError:  # we run on shifted ids: PDEATHSIG ends pasta when we exit
            return
        deadline = time.monotonic() + PASTA_STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            time.sleep(0.01)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
