"""A real HTTP CONNECT proxy on the host's loopback (the kind a daemon hands to sandboxes as
``HTTPS_PROXY``), and a greeting TCP service: both threads, stopped by their context managers."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable, Iterator

_ACCEPT_POLL_S = 0.2
_RELAY_TIMEOUT_S = 10.0


@contextlib.contextmanager
def _serving(host: str, on_client: Callable[[socket.socket, threading.Event], None]
             ) -> Iterator[int]:
    """Accept on ``host`` in a thread, handing each client to ``on_client`` (with the event set
    at exit); yields the port."""
    server = socket.create_server((host, 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(_ACCEPT_POLL_S)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            on_client(conn, stop)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


@contextlib.contextmanager
def tcp_service(host: str = "127.0.0.1", greeting: bytes = b"hello from the host\n"
                ) -> Iterator[int]:
    """A service that sends ``greeting`` to every client; yields its port."""
    def greet(conn: socket.socket, stop: threading.Event) -> None:
        with conn:
            conn.sendall(greeting)
    with _serving(host, greet) as port:
        yield port


@contextlib.contextmanager
def connect_proxy() -> Iterator[int]:
    """An HTTP CONNECT proxy on 127.0.0.1 that relays to whatever the client names; yields
    its port. Answers ``HTTP/1.1 200 Connection established`` or ``502``."""
    def start_relay(conn: socket.socket, stop: threading.Event) -> None:
        threading.Thread(target=_relay, args=(conn, stop), daemon=True).start()
    with _serving("127.0.0.1", start_relay) as port:
        yield port


def _relay(client: socket.socket, stop: threading.Event) -> None:
    with client:
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 8192:
            chunk = client.recv(4096)
            if not chunk:
                return
            request += chunk
        target = request.split(b" ", 2)[1].decode()
        host, _, port = target.rpartition(":")
        try:
            upstream = socket.create_connection((host, int(port)), timeout=_RELAY_TIMEOUT_S)
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            return
        with upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            pair = {client: upstream, upstream: client}
            while not stop.is_set():
                ready, _, _ = select.select(list(pair), [], [], _ACCEPT_POLL_S)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
