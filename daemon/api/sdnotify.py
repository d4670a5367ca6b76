"""The daemon's side of systemd's readiness protocol (``sd_notify``), without libsystemd.

Under ``Type=notify`` (``systemd/iii-daemon.service``) systemd passes ``NOTIFY_SOCKET`` and waits
for ``READY=1`` before it considers the daemon started; the daemon sends it once its socket
accepts connections, and ``STOPPING=1`` when a shutdown begins. The wire format is one datagram of
newline-separated ``KEY=VALUE`` assignments on an ``AF_UNIX``/``SOCK_DGRAM`` socket, so the
standard library is enough.

Example::

    from daemon.api import sdnotify
    sdnotify.notify(sdnotify.READY)      # True under systemd, False when run by hand
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

READY = "READY=1"
STOPPING = "STOPPING=1"
RELOADING = "RELOADING=1"

# A datagram to a local socket either goes through at once or the receiver is wedged; never let
# a stuck service manager stall the daemon's start-up or shutdown.
NOTIFY_SEND_TIMEOUT_S = 2.0


def notify(state: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"`` or ``"STATUS=…\\nREADY=1"``) to ``$NOTIFY_SOCKET``.

    ``NOTIFY_SOCKET`` is a filesystem path (``/run/user/1000/systemd/notify``) or an abstract
    name written ``@name``. Returns True when the datagram was delivered, False when there is
    no ``NOTIFY_SOCKET`` (not started by systemd: a no-op), when its address kind is not
    supported, or when sending failed; the last two are logged as warnings, because a service
    manager that never hears ``READY=1`` will time the daemon out.
    """
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        target = "\0" + address[1:]  # Linux abstract namespace
    elif address.startswith("/"):
        target = address
    else:
        log.warning("NOTIFY_SOCKET=%r is not a path or an @abstract name; "
                    "not sending %r", address, state)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(NOTIFY_SEND_TIMEOUT_S)
            sock.sendto(state.encode("utf-8"), target)
    except OSError as exc:
        log.warning("could not send %r to NOTIFY_SOCKET=%s: %s", state, address, exc)
        return False
    return True
