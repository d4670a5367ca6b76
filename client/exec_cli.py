"""``iii worker exec``: the client side. The command's stdio are this process's own fds (or,
with a tty, the slave of a pty this process opens), passed to the daemon over the socket, so
nothing is copied through the daemon. With a tty this process copies between its terminal and
the pty master, like ssh: raw mode, resizes set on the master (the kernel sends the command
SIGWINCH), Ctrl-C goes to the command as a byte. Without one, Ctrl-C and other signals are
forwarded with ``worker.exec_signal``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from typing import Any

from client.rpc_client import RpcClient

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_COPY_CHUNK = 1 << 16


def env_pairs(items: list[str]) -> dict[str, str]:
    """``-e K=V`` options → a dict; raises ``CliError`` naming a malformed one."""
    from client.errors import CliError

    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"-e {item!r}: use KEY=VALUE")
        pairs[key] = value
    return pairs


def run_exec(params: dict[str, Any], tty_mode: bool, method: str = "worker.exec") -> int:
    """Run the exec; return the command's exit code (124 on timeout). ``method`` is
    ``worker.exec`` or ``sandbox.exec_stdio`` (its signals go to ``<family>.exec_signal``)."""
    params = {**params, "exec_id": os.urandom(16).hex(), "tty": tty_mode, "_method": method}
    if tty_mode:
        return _with_pty(params)
    return _with_own_stdio(params)


def _call(params: dict[str, Any], fds: list[int]) -> int:
    request = {k: v for k, v in params.items() if k != "_method"}
    with RpcClient() as client:
        result = client.call(params["_method"], request, fds=fds)
    # WorkerExecResult's exit_code, read without msgspec and the wire types (~20 ms of
    # start-up, a third of an exec's round trip)
    code = result.get("exit_code") if isinstance(result, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        from client.errors import ProtocolError

        raise ProtocolError(f"cannot read the daemon's answer to {params['_method']}: "
                            f"no exit_code in {str(result)[:200]}")
    return code


def _with_own_stdio(params: dict[str, Any]) -> int:
    done: list[int] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            done.append(_call(params, [0, 1, 2]))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)
    worker = threading.Thread(target=call, daemon=True)
    with _forwarding(params["exec_id"], params["_method"].split(".")[0] + ".exec_signal"):
        worker.start()
        while worker.is_alive():
            worker.join(0.1)  # short joins: signal handlers run in the main thread
    if errors:
        raise errors[0]
    return done[0]


@contextlib.contextmanager
def _forwarding(exec_id: str, method: str) -> Iterator[None]:
    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(Exception), RpcClient(autostart=False) as client:
            client.call(method, {"exec_id": exec_id, "signal": signum})
    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _with_pty(params: dict[str, Any]) -> int:
    master, slave = pty.openpty()
    _copy_winsize(sys.stdin.fileno(), master)
    done: list[int] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            done.append(_call(params, [slave, slave, slave]))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)
        finally:
            os.close(slave)  # the daemon has its copies; EOF on the master when the command ends
    worker = threading.Thread(target=call, daemon=True)
    old = signal.signal(signal.SIGWINCH, lambda *_: _copy_winsize(sys.stdin.fileno(), master))
    saved = termios.tcgetattr(sys.stdin.fileno())
    try:
        tty.setraw(sys.stdin.fileno())
        worker.start()
        _pump(master, worker)
    finally:
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, old)
        os.close(master)
    if errors:
        raise errors[0]
    return done[0]


def _pump(master: int, worker: threading.Thread) -> None:
    """Terminal -> master and master -> terminal until the command's side is gone."""
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    while True:
        try:
            readable, _, _ = select.select([stdin, master], [], [], 0.1)
        except InterruptedError:
            continue
        if master in readable:
            try:
                data = os.read(master, _COPY_CHUNK)
            except OSError:  # EIO: every slave fd is closed, the command is gone
                data = b""
            if not data:
                if not worker.is_alive():
                    return
                continue
            os.write(stdout, data)
        if stdin in readable:
            data = os.read(stdin, _COPY_CHUNK)
            if data:
                os.write(master, data)
        if not worker.is_alive() and master not in readable:
            return


def _copy_winsize(terminal: int, master: int) -> None:
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(terminal, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(master, termios.TIOCSWINSZ, size)
