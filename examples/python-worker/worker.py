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
    # Signals only set the event: the SDK runs its own thread, the main thread just waits.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    iii = register_worker(os.environ["III_URL"])
    iii.register_function("examples::greet", greet)
    print("python-worker: registered examples::greet", flush=True)
    stop.wait()
    print("python-worker: stopping", flush=True)
    iii.shutdown()


if __name__ == "__main__":
    main()
