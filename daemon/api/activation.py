"""systemd socket activation (``sd_listen_fds``), without libsystemd.

With ``systemd/iii-daemon.socket`` systemd binds ``~/.iii/iii.sock`` itself and starts the daemon
with the listening socket as fd 3, announced by ``LISTEN_PID`` (the pid it is meant for) and
``LISTEN_FDS`` (how many fds from 3 on), optionally named by ``LISTEN_FDNAMES``. The daemon then
serves on that socket instead of binding its own, so clients that connect while the daemon
restarts just wait in the backlog.

Example::

    sock = inherited_listen_socket()
    if sock is None:
        sock = bind_our_own_socket()
    server = await loop.create_unix_server(factory, sock=sock)
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import MutableMapping

from daemon.errors import InvalidArgument

SD_LISTEN_FDS_START = 3
# systemd's default FileDescriptorName= is the socket unit's name.
SOCKET_UNIT_NAME = "iii-daemon.socket"
ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def inherited_listen_socket(
    environ: MutableMapping[str, str] | None = None,
) -> socket.socket | None:
    """Take the listening socket systemd passed to this process, or return None.

    Returns None when no socket was passed (no ``LISTEN_FDS``, ``LISTEN_FDS=0``) or when it was
    passed to another process (``LISTEN_PID`` is not ``os.getpid()``: the variables leaked from a
    parent). The ``LISTEN_*`` variables are removed from ``environ`` in every case, as
    ``sd_listen_fds(1)`` does, so launchers and workers never mistake them for their own.

    The socket is returned blocking and non-inheritable (launchers must not keep it open).

    Raises ``InvalidArgument`` with one line naming the variable or fd when the variables are
    malformed or the fd is not a listening ``AF_UNIX`` stream socket.
    """
    env = os.environ if environ is None else environ
    raw_pid, raw_fds, raw_names = (env.get(name) for name in ACTIVATION_VARIABLES)
    for name in ACTIVATION_VARIABLES:
        env.pop(name, None)
    if raw_fds is None and raw_pid is None:
        return None
    if raw_pid is None or raw_fds is None:
        present, missing = (("LISTEN_FDS", "LISTEN_PID") if raw_pid is None
                            else ("LISTEN_PID", "LISTEN_FDS"))
        raise InvalidArgument(
            f"socket activation: {present} is set without {missing}; "
            "start the daemon from iii-daemon.socket or unset both")
    pid = _parse_count("LISTEN_PID", raw_pid)
    if pid != os.getpid():
        return None
    count = _parse_count("LISTEN_FDS", raw_fds)
    if count == 0:
        return None
    fd = SD_LISTEN_FDS_START + _pick_index(count, raw_names)
    for other in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        if other != fd:
            _close_on_exec(other)
    return _adopt_listening_unix_socket(fd)


def _parse_count(name: str, raw: str) -> int:
    if not raw.isdigit():
        raise InvalidArgument(
            f"socket activation: {name}={raw!r} is not a non-negative integer")
    return int(raw)


def _pick_index(count: int, raw_names: str | None) -> int:
    """The passed fd to serve on: the only one, or the one named after our socket unit."""
    names = raw_names.split(":") if raw_names is not None else None
    if names is not None and len(names) != count:
        raise InvalidArgument(
            f"socket activation: LISTEN_FDNAMES={raw_names!r} names {len(names)} fds "
            f"but LISTEN_FDS={count}")
    if count == 1:
        return 0
    if names is not None and names.count(SOCKET_UNIT_NAME) == 1:
        return names.index(SOCKET_UNIT_NAME)
    raise InvalidArgument(
        f"socket activation: LISTEN_FDS={count} but the daemon serves on one socket; "
        f"give iii-daemon.socket a single ListenStream= (or name it {SOCKET_UNIT_NAME!r} "
        "in LISTEN_FDNAMES)")


def _close_on_exec(fd: int) -> None:
    with contextlib.suppress(OSError):  # not open: nothing can leak to children
        os.set_inheritable(fd, False)


def _adopt_listening_unix_socket(fd: int) -> socket.socket:
    where = f"socket activation: inherited fd {fd}"
    try:
        sock = socket.socket(fileno=fd)  # family and type are read from the fd
    except OSError as exc:
        raise InvalidArgument(
            f"{where} is not a usable socket ({exc.strerror or exc}); "
            "check ListenStream= in iii-daemon.socket") from exc
    try:
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            raise InvalidArgument(
                f"{where} is a {_describe(sock)} socket, expected an AF_UNIX stream socket; "
                "use ListenStream=%h/.iii/iii.sock in iii-daemon.socket")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise InvalidArgument(
                f"{where} is an AF_UNIX stream socket that is not listening; "
                "use ListenStream= (not Accept=yes) in iii-daemon.socket")
    except BaseException:
        sock.detach()  # the fd is systemd's; leave it as we found it
        raise
    sock.set_inheritable(False)
    sock.setblocking(True)
    return sock


def _describe(sock: socket.socket) -> str:
    family = getattr(sock.family, "name", str(sock.family))
    kind = getattr(sock.type, "name", str(sock.type))
    return f"{family}/{kind}"
