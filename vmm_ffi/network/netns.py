"""The steps the sandbox init runs inside the sandbox's own network namespace, as its root and
still on the host's files: load the policy's rulesets (``vmm_ffi.network.policy`` compiles
them), let ``ping`` work without raw sockets, bring ``lo`` up, then drop ``CAP_NET_ADMIN`` and
``CAP_NET_RAW`` for good. ``vmm_ffi.exec.enter`` drops the same two for every exec.
"""

from __future__ import annotations

# Imported here, not where used: a launcher on shifted ids may not read the stdlib later.
import ctypes
import fcntl
import os
import shutil
import struct
import subprocess

RESTORE = {4: ("iptables-nft-restore", "iptables-restore"),
           6: ("ip6tables-nft-restore", "ip6tables-restore")}
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RESTORE_TIMEOUT_S = 10.0
IPTABLES_HINT = "apt-get install iptables"
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
PING_GROUP_RANGE = "/proc/sys/net/ipv4/ping_group_range"
PR_CAPBSET_DROP = 24


def allow_localnet() -> None:
    """Let the namespace route 127.0.0.1's DNATed packets out (``route_localnet``)."""
    with open("/proc/sys/net/ipv4/conf/all/route_localnet", "w") as f:
        f.write("1")


def load_rules(rulesets: dict[int, str]) -> None:
    """In the sandbox's network namespace (as its root): load the rulesets; raises ``OSError``
    naming the tool, with how to install it when missing."""
    for version, text in sorted(rulesets.items()):
        tool = next((found for name in RESTORE[version]
                     if (found := shutil.which(name, path=SEARCH_PATH)) is not None), None)
        if tool is None:
            raise OSError(f"{RESTORE[version][0]} is not installed, so the network policy "
                          f"cannot be enforced ({IPTABLES_HINT})")
        try:
            proc = subprocess.run([tool, "-w"], input=text, check=False, capture_output=True,
                                  text=True, timeout=RESTORE_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise OSError(f"{tool} timed out") from exc
        if proc.returncode != 0:
            raise OSError(f"{tool} failed: {proc.stderr.strip() or proc.returncode}")


def drop_net_admin() -> None:
    """Drop CAP_NET_ADMIN and CAP_NET_RAW from the bounding set: nothing exec'd from here on
    gets them back, so the rules, routes and addresses of the sandbox's namespace stay as the
    init left them, and no raw or packet socket can send a frame the rules do not see (pasta or
    the bridge would carry it). ``ping`` keeps working through ICMP datagram sockets
    (``allow_ping``), as under podman."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_NET_RAW, "CAP_NET_RAW")):
        if libc.prctl(ctypes.c_int(PR_CAPBSET_DROP), ctypes.c_ulong(cap), 0, 0, 0) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_CAPBSET_DROP, {name}): {os.strerror(err)}")


def allow_ping() -> None:
    """Let every group of the sandbox's namespace open ICMP datagram sockets (``ping``
    without CAP_NET_RAW); best effort: an older kernel may not namespace it."""
    try:
        with open(PING_GROUP_RANGE, "w") as f:
            f.write("0 2147483647")
    except OSError:
        pass


def loopback_up() -> None:
    """Bring the namespace's ``lo`` up (``none``: no helper configures anything)."""
    siocgifflags, siocsifflags, iff_up, af_inet, sock_dgram = 0x8913, 0x8914, 0x1, 2, 2
    # libc's socket(): the socket module would cost every launcher a megabyte of heap
    fd = ctypes.CDLL(None, use_errno=True).socket(af_inet, sock_dgram | os.O_CLOEXEC, 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"socket for the loopback interface: {os.strerror(err)}")
    try:
        req = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(fd, siocgifflags, req))[1]
        fcntl.ioctl(fd, siocsifflags, struct.pack("16sh14x", b"lo", flags | iff_up))
    finally:
        os.close(fd)
