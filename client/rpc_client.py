"""A small synchronous JSON-RPC client of the daemon's socket (SPEC §11), for the CLI.

Only the standard library (``socket``, ``json``): ``iii worker list --json`` must start fast,
so nothing here imports msgspec (~25 ms), asyncio, aiohttp or rich.

    with RpcClient() as client:                      # autostarts a daemon unless III_NO_AUTOSTART=1
        info = client.call("daemon.info")            # -> dict
        info = client.call("daemon.info", result_type=DaemonInfoResult)  # -> the typed struct
        raw = client.call_raw("worker.list")         # -> the result's JSON bytes, verbatim
        client.call("worker.add", {"target": "/p", "progress": True},
                    on_notification=lambda method, params: print(method, params))

Errors: :class:`client.errors.DaemonUnavailable` when no daemon answers (and none could be
started), :class:`client.errors.RpcError` subclasses for JSON-RPC errors (by code),
:class:`client.errors.ProtocolError` for an answer this client cannot read (also a result that
does not decode into its ``result_type``; msgspec is imported only then).
"""

from __future__ import annotations

import array
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar, overload

from client.errors import DaemonUnavailable, ProtocolError, from_rpc_error
from client.protocol.constants import MAX_LINE_BYTES

__all__ = ["RpcClient", "decode", "default_home", "default_socket_path", "spawn_daemon"]

R = TypeVar("R")

CONNECT_TIMEOUT_S = 5.0
AUTOSTART_DEADLINE_S = 20.0  # a cold daemon imports its modules and binds within this
AUTOSTART_POLL_S = 0.05
# A blocking recv() can miss a SIGINT that lands just before it starts (Python only runs signal
# handlers between bytecodes); waking up this often bounds how long Ctrl-C can take.
RECV_WAKEUP_S = 0.25
CONTROL_REPLY_TIMEOUT_S = 30.0  # daemon.info / daemon.shutdown answer at once unless hung
_RECV_CHUNK = 256 * 1024

NotificationHandler = Callable[[str, Any], None]
# Daemons this process started: they outlive it by design and are never waited for; holding
# the Popen objects keeps them from being reported as leaked child processes.
_DETACHED_DAEMONS: list[Any] = []


def decode(value: Any, result_type: type[R], what: str) -> R:
    """``value`` (a decoded JSON result or notification) as ``result_type``, a struct of
    ``client.protocol``; :class:`ProtocolError` (one line) when it does not fit, e.g. a daemon
    of another version."""
    import msgspec

    try:
        return msgspec.convert(value, result_type)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"cannot read the daemon's {what}: {exc}",
                            "the daemon may be another version than this CLI; restart it "
                            "(`iii daemon stop`, then run the command again)") from None


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def default_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("III_HOME") or Path.home() / ".iii").expanduser().absolute()


def default_socket_path(env: Mapping[str, str] | None = None) -> Path:
    """``$III_SOCKET``, else ``$III_HOME/iii.sock`` (the daemon resolves it the same way)."""
    env = os.environ if env is None else env
    if env.get("III_SOCKET"):
        return Path(env["III_SOCKET"]).expanduser().absolute()
    return default_home(env) / "iii.sock"


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT_S)
    try:
        sock.connect(str(path))
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def spawn_daemon(env: Mapping[str, str] | None = None) -> Any:
    """Start ``python -m daemon run`` detached (own session), logging to ``$III_HOME/daemon.log``.

    Returns the ``subprocess.Popen``; the daemon outlives this process.
    """
    import subprocess

    env = dict(os.environ if env is None else env)
    for inherited in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET"):
        env.pop(inherited, None)
    home = default_home(env)
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        log = open(home / "daemon.log", "ab")  # noqa: SIM115 - closed below, once spawned
    except OSError as exc:
        raise DaemonUnavailable(f"cannot start the daemon: III_HOME {home}: {exc.strerror}",
                                hint="set III_HOME to a directory you can write") from exc
    with log:
        # -P: never let a `daemon/` directory in some cwd shadow ours.
        return subprocess.Popen(
            [sys.executable, "-P", "-m", "daemon", "run"], stdin=subprocess.DEVNULL,
            stdout=log, stderr=log, cwd="/", env=env, start_new_session=True, close_fds=True)


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class RpcClient:
    """One connection to the daemon; requests are sent one at a time."""

    def __init__(self, socket_path: Path | None = None, *, autostart: bool | None = None,
                 env: Mapping[str, str] | None = None,
                 reply_timeout_s: float | None = None) -> None:
        self._env = os.environ if env is None else env
        self.socket_path = socket_path or default_socket_path(self._env)
        if autostart is None:
            autostart = self._env.get("III_NO_AUTOSTART") != "1"
        self._autostart = autostart
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._next_id = 1
        # None: wait as long as the operation takes (an add may install for minutes)
        self._reply_timeout_s = reply_timeout_s
        self._deadline: float | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- connecting --------------------------------------------------------------------------
    def connect(self) -> None:
        """Connect, starting a daemon first when none answers and autostart is on."""
        if self._sock is not None:
            return
        try:
            self._sock = _connect(self.socket_path)
            return
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            if not self._autostart:
                hint = "start one with `iii daemon run`"
                if self._env.get("III_NO_AUTOSTART") == "1":
                    hint += " (autostart is off: III_NO_AUTOSTART=1)"
                raise DaemonUnavailable(
                    f"no iii daemon is running on {self.socket_path}", hint) from exc
        except PermissionError as exc:
            raise DaemonUnavailable(
                f"permission denied connecting to {self.socket_path}",
                "the daemon belongs to another user; set III_HOME or III_SOCKET") from exc
        except OSError as exc:
            raise DaemonUnavailable(f"cannot connect to {self.socket_path}: {exc}") from exc
        self._sock = self._autostart_daemon()

    def _autostart_daemon(self) -> socket.socket:
        proc = spawn_daemon({**self._env, "III_SOCKET": str(self.socket_path)})
        log_path = default_home(self._env) / "daemon.log"
        deadline = time.monotonic() + AUTOSTART_DEADLINE_S
        while True:
            try:
                sock = _connect(self.socket_path)
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            else:
                _DETACHED_DAEMONS.append(proc)
                return sock
            status = proc.poll()
            if status is not None:
                try:  # it may have lost a start-up race to another daemon that now serves
                    return _connect(self.socket_path)
                except OSError:
                    raise DaemonUnavailable(
                        f"the iii daemon exited with status {status} while starting: "
                        f"{_log_tail(log_path)}", f"see {log_path}") from None
            if time.monotonic() > deadline:
                raise DaemonUnavailable(
                    f"the iii daemon did not open {self.socket_path} within "
                    f"{AUTOSTART_DEADLINE_S:.0f}s", f"see {log_path}")
            time.sleep(AUTOSTART_POLL_S)

    # -- framing -----------------------------------------------------------------------------
    def _send(self, payload: bytes, fds: Sequence[int] = ()) -> None:
        assert self._sock is not None
        try:
            self._sock.settimeout(None)
            if fds:  # SCM_RIGHTS travel with the first byte; the rest follows as usual
                sent = self._sock.sendmsg([payload[:1]], [(
                    socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())])
                payload = payload[sent:]
            self._sock.sendall(payload)
        except OSError as exc:
            raise DaemonUnavailable(f"lost the connection to the daemon: {exc}") from exc

    def _read_line(self) -> bytes:
        assert self._sock is not None
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[:end + 1]
                return line
            if len(self._buf) > MAX_LINE_BYTES:
                raise ProtocolError("the daemon sent a line longer than 16 MiB")
            try:
                self._sock.settimeout(RECV_WAKEUP_S)
                chunk = self._sock.recv(_RECV_CHUNK)
            except TimeoutError:
                if self._deadline is not None and time.monotonic() > self._deadline:
                    raise DaemonUnavailable(
                        f"the daemon on {self.socket_path} did not answer within "
                        f"{self._reply_timeout_s:.0f}s", "it may be hung; see its log") from None
                continue  # nothing yet; pending signals (Ctrl-C) get their chance
            except OSError as exc:
                raise DaemonUnavailable(f"lost the connection to the daemon: {exc}") from exc
            if not chunk:
                raise DaemonUnavailable("the daemon closed the connection",
                                        "it may be shutting down; retry")
            self._buf += chunk

    # -- calls -------------------------------------------------------------------------------
    def _request(self, method: str, params: Mapping[str, Any] | None,
                 on_notification: NotificationHandler | None,
                 fds: Sequence[int] = ()) -> tuple[int, bytes, Any]:
        """Send one request (with ``fds`` passed alongside, SCM_RIGHTS); return (id, the
        response line, its result decoded)."""
        self.connect()
        req_id = self._next_id
        self._next_id += 1
        request: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method}
        if params:
            request["params"] = params
        self._send(_encode(request) + b"\n", fds)
        self._deadline = None if self._reply_timeout_s is None \
            else time.monotonic() + self._reply_timeout_s
        while True:
            line = self._read_line()
            try:
                msg = json.loads(line)
            except ValueError as exc:
                raise ProtocolError(f"invalid reply from the daemon: {exc}") from exc
            if not isinstance(msg, dict):
                raise ProtocolError(f"unexpected reply from the daemon: {line[:200]!r}")
            if "method" in msg and "id" not in msg:
                if on_notification is not None:
                    on_notification(str(msg["method"]), msg.get("params"))
                continue
            if "error" in msg:
                if msg.get("id") not in (req_id, None):
                    continue  # an answer to another request cannot happen; skip it
                raise from_rpc_error(msg["error"])
            if msg.get("id") != req_id or "result" not in msg:
                raise ProtocolError(f"unexpected reply from the daemon: {line[:200]!r}")
            return req_id, line, msg["result"]

    def call_raw(self, method: str, params: Mapping[str, Any] | None = None,
                 on_notification: NotificationHandler | None = None) -> bytes:
        """Send one request; return its result's JSON text exactly as the daemon sent it.

        Notifications that arrive before the response go to ``on_notification(method, params)``.
        """
        req_id, line, result = self._request(method, params, on_notification)
        # The daemon writes {"jsonrpc":"2.0","id":N,"result":...}: slice the result out as sent.
        prefix = b'{"jsonrpc":"2.0","id":%d,"result":' % req_id
        if line.startswith(prefix) and line.endswith(b"}"):
            return line[len(prefix):-1]
        return _encode(result)  # another framing: the same value, compactly re-encoded

    @overload
    def call(self, method: str, params: Mapping[str, Any] | None = None,
             on_notification: NotificationHandler | None = None, fds: Sequence[int] = (),
             *, result_type: None = None) -> Any: ...

    @overload
    def call(self, method: str, params: Mapping[str, Any] | None = None,
             on_notification: NotificationHandler | None = None, fds: Sequence[int] = (),
             *, result_type: type[R]) -> R: ...

    def call(self, method: str, params: Mapping[str, Any] | None = None,
             on_notification: NotificationHandler | None = None, fds: Sequence[int] = (),
             *, result_type: type[R] | None = None) -> Any:
        """Like :meth:`call_raw`, returning the decoded result: as ``result_type`` (a struct of
        ``client.protocol``) when given, else dicts and lists. ``fds`` go with the request
        (``worker.exec``: the first request on a new connection)."""
        result = self._request(method, params, on_notification, fds)[2]
        if result_type is None:
            return result
        return decode(result, result_type, f"answer to {method}")

    def follow(self, on_notification: NotificationHandler) -> None:
        """After a streaming call (``logs`` with follow, ``events.subscribe``): deliver
        notifications until the daemon closes the connection (or KeyboardInterrupt)."""
        while True:
            try:
                line = self._read_line()
            except DaemonUnavailable:
                return
            msg = json.loads(line)
            if isinstance(msg, dict) and "method" in msg:
                on_notification(str(msg["method"]), msg.get("params"))


def _lock_is_free(socket_path: Path) -> bool:
    """True when no daemon holds ``<socket>.lock`` (the daemon keeps it until fully stopped)."""
    import fcntl

    try:
        fd = os.open(socket_path.with_name(socket_path.name + ".lock"), os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def stop_daemon(*, stop_workers: bool, deadline_s: float,
                socket_path: Path | None = None) -> None:
    """``daemon.shutdown`` then wait until the daemon has fully exited (lock released).

    Raises :class:`DaemonUnavailable` when no daemon runs, or when it is still running after
    ``deadline_s``.
    """
    with RpcClient(socket_path, autostart=False, reply_timeout_s=CONTROL_REPLY_TIMEOUT_S) as client:
        client.call("daemon.shutdown", {"stop_workers": stop_workers})
        path = client.socket_path
    deadline = time.monotonic() + deadline_s
    while not _lock_is_free(path):
        if time.monotonic() > deadline:
            raise DaemonUnavailable(f"the daemon on {path} is still shutting down after "
                                    f"{deadline_s:.0f}s", "check its log")
        time.sleep(AUTOSTART_POLL_S)
