"""The ``iii`` command line: a thin typer client of the daemon (SPEC §12).

Start-up must stay fast: this module imports nothing heavy. The typer command tree lives in
``client.commands`` (imported on first use; ``from client.cli import app`` still works), and the
read commands scripts call in loops (``iii worker list --json``, ``iii image list --json``) are
answered without importing typer at all: same request, same verbatim output, same errors.
"""

from __future__ import annotations

import sys
from typing import Any

# argv (after the program name) → socket method, for the typer-free path.
_FAST_JSON_COMMANDS: dict[tuple[str, ...], str] = {
    ("worker", "list", "--json"): "worker.list",
    ("image", "list", "--json"): "image.list",
}


def _fast_json(method: str) -> int:
    from client.errors import CliError
    from client.output import print_error, print_json_raw
    from client.rpc_client import RpcClient

    try:
        with RpcClient() as client:
            print_json_raw(client.call_raw(method))
    except CliError as exc:
        print_error(exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def main() -> None:
    """``iii``."""
    method = _FAST_JSON_COMMANDS.get(tuple(sys.argv[1:]))
    if method is not None:
        sys.exit(_fast_json(method))
    from client.commands import app

    app()


def worker_main() -> None:
    """``iii-worker``: the worker group on its own (the upstream engine CLI dispatches to it)."""
    method = _FAST_JSON_COMMANDS.get(("worker", *sys.argv[1:]))
    if method == "worker.list":
        sys.exit(_fast_json(method))
    from client.commands import worker_app

    worker_app()


def __getattr__(name: str) -> Any:
    # `from client.cli import app` (tests, CliRunner) without importing typer for every run.
    if name in ("app", "worker_app", "image_app", "daemon_app"):
        from client import commands

        return getattr(commands, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
