"""The ``iii`` command line: a thin typer client of the daemon (SPEC §12).

Start-up must stay fast: this module imports nothing heavy. The typer command tree lives in
``client.commands`` (imported on first use; ``from client.cli import app`` still works), and the
read commands scripts call in loops (``iii worker list [--json]``, ``iii image list --json``) and
``iii worker export NAME --to DEST --json`` are answered without importing typer at all: same
request, same output, same errors.
"""

from __future__ import annotations

import sys
from typing import Any

# argv (after the program name) → socket method, for the typer-free path (typer alone imports
# pydantic and click: ~100 ms before a command body runs).
_FAST_COMMANDS: dict[tuple[str, ...], str] = {
    ("worker", "list", "--json"): "worker.list",
    ("worker", "list"): "worker.list",
    ("image", "list", "--json"): "image.list",
}


def _fast(method: str, as_json: bool) -> int:
    from client.errors import CliError
    from client.output import print_error, print_json_raw, print_workers
    from client.rpc_client import RpcClient

    try:
        with RpcClient() as client:
            if as_json:
                print_json_raw(client.call_raw(method))
            else:
                result = client.call(method)
                print_workers(result.get("workers", []), result.get("engine_age_s"),
                              result.get("config_error"))
    except CliError as exc:
        print_error(exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _export_params(argv: tuple[str, ...]) -> dict[str, Any] | None:
    """``worker export NAME --to DEST --json`` (options in either order): the one write
    command CI scripts repeat, whose unchanged re-export is otherwise mostly typer's start-up.
    None for any other shape (typer then parses it, with its help and errors)."""
    if len(argv) != 6 or argv[:2] != ("worker", "export") or argv[2].startswith("-"):
        return None
    rest: tuple[str, ...] = argv[3:]
    if rest[0] == "--json":
        rest = rest[1:]
    elif rest[-1] == "--json":
        rest = rest[:-1]
    else:
        return None
    if rest[0] != "--to" or rest[1].startswith("-") or rest[1] in ("oci:", ""):
        return None
    dest = rest[1]
    if dest.startswith("oci:"):  # the daemon has its own working directory (as commands.py)
        import os

        dest = "oci:" + os.path.abspath(dest[4:])
    return {"name": argv[2], "to": dest}


def _fast_export(params: dict[str, Any]) -> int:
    from client.errors import CliError
    from client.output import print_error, print_json_raw
    from client.rpc_client import RpcClient

    try:
        with RpcClient() as client:
            print_json_raw(client.call_raw("worker.export", params))
    except CliError as exc:
        print_error(exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def main() -> None:
    """``iii``."""
    argv = tuple(sys.argv[1:])
    method = _FAST_COMMANDS.get(argv)
    if method is not None:
        sys.exit(_fast(method, argv[-1] == "--json"))
    export = _export_params(argv)
    if export is not None:
        sys.exit(_fast_export(export))
    from client.commands import app

    app()


def worker_main() -> None:
    """``iii-worker``: the worker group on its own (the upstream engine CLI dispatches to it)."""
    argv = ("worker", *sys.argv[1:])
    method = _FAST_COMMANDS.get(argv)
    if method is not None:
        sys.exit(_fast(method, argv[-1] == "--json"))
    export = _export_params(argv)
    if export is not None:
        sys.exit(_fast_export(export))
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
