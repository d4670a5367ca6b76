"""The daemon's listening Unix socket: ownership, permissions and stale-socket recovery (SPEC §11).

    listener = bind_listener(Path("/home/u/.iii/iii.sock"))   # raises ListenerError
    ...
    listener.close()   # closes the socket, unlinks the file we created, releases the lock

A lock file beside the socket (``iii.sock.lock``, ``flock``) makes "one daemon per socket" hold
even when two daemons start at the same instant; a socket file nobody answers on is stale and
is replaced.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from daemon.errors import ListenerError

__all__ = ["Listener", "adopt_listener", "bind_listener", "socket_answers"]

log = logging.getLogger("iii.daemon.listener")

LISTEN_BACKLOG = 512
PROBE_TIMEOUT_S = 1.0  # how long a live daemon may take to accept a probe connection


@dataclass
class Listener:
    """A listening socket plus what must be undone when the daemon stops."""

    sock: socket.socket
    path: Path | None  # the socket file we created (None when inherited from systemd)
    lock_fd: int | None = None
    _inode: int | None = None

    def close(self) -> None:
        """Stop listening; remove our socket file (only if it is still ours) and the lock."""
        self.sock.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(self.path).st_ino == self._inode:
                    os.unlink(self.path)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


def socket_answers(path: Path, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when something accepts connections on the Unix socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except TimeoutError:
        return True  # a listener whose backlog is full is alive
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            return False
        raise
    finally:
        probe.close()
    return True


def _ensure_parent(path: Path) -> None:
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(parent, 0o700)  # mkdir's mode is filtered by the umask


def _take_lock(path: Path) -> int:
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ListenerError(
            f"another iii daemon is already running on {path} (it holds {lock_path}); "
            "stop it with `iii daemon stop`") from None
    return fd


def bind_listener(path: Path) -> Listener:
    """Create the daemon's socket at ``path`` with mode 0600 and start listening.

    Raises :class:`ListenerError` when another daemon answers on ``path`` or holds its lock, or
    when ``path`` exists and is not a socket. A socket file that nobody answers on is removed.
    """
    if len(os.fsencode(path)) > 107:
        raise ListenerError(f"socket path {path} is too long for a Unix socket "
                            "(max 107 bytes); set III_SOCKET to a shorter path")
    _ensure_parent(path)
    lock_fd = _take_lock(path)
    try:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise ListenerError(f"{path} exists and is not a socket; remove it or set "
                                    "III_SOCKET to another path")
            if socket_answers(path):
                raise ListenerError(f"another iii daemon is already serving {path}")
            log.warning("removing stale socket %s left by a daemon that is gone", path)
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o177)  # the file is born 0600: no window where others connect
            try:
                sock.bind(str(path))
            finally:
                os.umask(old_umask)
            os.chmod(path, 0o600)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return Listener(sock=sock, path=path, lock_fd=lock_fd, _inode=os.lstat(path).st_ino)
    except BaseException:
        os.close(lock_fd)
        raise


def adopt_listener(sock: socket.socket) -> Listener:
    """Wrap an already-listening socket handed over by systemd socket activation.

    The socket file stays systemd's (never unlinked by us); the lock beside it is still taken,
    so ``iii daemon stop`` can wait for this daemon's exit and a second daemon is refused.
    """
    sock.setblocking(False)
    name = sock.getsockname()
    lock_fd = None
    if isinstance(name, str) and name.startswith("/"):
        try:
            lock_fd = _take_lock(Path(name))
        except ListenerError:
            sock.close()
            raise
        except OSError as exc:  # e.g. a read-only directory: serve anyway, unlocked
            log.warning("cannot take the daemon lock beside %s: %s", name, exc)
    return Listener(sock=sock, path=None, lock_fd=lock_fd)
