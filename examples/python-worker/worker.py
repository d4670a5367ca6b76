"""Example iii worker: registers ``examples::greet`` and serves it until SIGTERM.

The sandbox sets ``III_URL`` (the engine) and ``III_WORKER_NAME``; the SDK reads the latter.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from iii import register_worker


def greet(data: Any) -> dict[str, str]:
    name = data.get("name", "world") if isinstance(data, dict) else "world"
    greeting = os.environ.get("GREETING", "Hello")
    return {"message": f"{greeting}, {name}!"}


def main() -> None:
    stop = threading.Event()
    connected = False

    def on_signal(signum: int, frame: object) -> None:
        # register_worker() may block for up to 30 s while the engine is unreachable; a stop
        # request in that window must not wait for it (nothing is registered yet).
        if not connected:
            os._exit(0)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    iii = register_worker(os.environ["III_URL"])
    connected = True
    iii.register_function("examples::greet", greet)
    print("python-worker: registered examples::greet", flush=True)
    stop.wait()
    print("python-worker: stopping", flush=True)
    iii.shutdown()


if __name__ == "__main__":
    main()
