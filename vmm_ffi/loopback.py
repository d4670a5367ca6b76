"""``network: none``: a network namespace of the sandbox's own with only ``lo``, brought up.

A new network namespace starts with ``lo`` down, so even ``127.0.0.1`` would be unreachable; the
launcher calls :func:`bring_up_loopback` right after ``unshare`` (it then holds CAP_NET_ADMIN
over the new namespace). Nothing else is configured: no route leaves the sandbox.
"""

from __future__ import annotations

import fcntl
import socket
import struct

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = "16sh22x"  # struct ifreq: name, then the flags member of the union (40 bytes)


def bring_up_loopback() -> None:
    """Set ``IFF_UP`` on ``lo`` in the caller's network namespace. Raises ``OSError``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack(_IFREQ, b"lo", 0)
        _, flags = struct.unpack(_IFREQ, fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | IFF_UP))
