"""The ``iii`` command line: a thin typer client of the daemon (SPEC §12).

Start-up must stay fast: this module imports nothing heavy. The typer command tree lives in
``client.commands`` (imported on first use; ``from client.cli import app`` still works), and the
read commands scripts call in loops (``iii worker list [--json]``, ``iii image list --json``) and
``iii worker export NAME --to DEST --json`` are answered without importing typer at all: same
request, same output, same errors. So is ``iii worker exec`` (its round trip is the developer
loop's unit of latency): the usual forms are parsed here; anything else (``--help``, an unknown
or malformed option, a missing argument) goes to typer, which prints its own usage error.
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


def _fast(method: str, as_json: bool, params: dict[str, Any] | None = None) -> int:
    """One request without typer: its JSON result verbatim, or the workers table."""
    from client.errors import CliError
    from client.output import print_error, print_json_raw, print_workers
    from client.rpc_client import RpcClient

    try:
        with RpcClient() as client:
            if as_json:
                print_json_raw(client.call_raw(method, params))
            else:
                result = client.call(method, params)
                print_workers(result.get("workers", []), result.get("engine_age_s"),
                              result.get("config_error"))
    except CliError as exc:
        print_error(exc)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _parse_exec(args: list[str]) -> tuple[dict[str, Any], bool | None] | None:
    """``worker exec`` arguments as typer reads them -> (request params, --tty/--no-tty), or
    None for anything the fast path leaves to typer."""
    env: list[str] = []
    positional: list[str] = []
    options: dict[str, str] = {}
    use_tty: bool | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional += args[i:]
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        if arg in ("-t", "--tty", "--no-tty"):
            use_tty = arg != "--no-tty"
            continue
        key, eq, value = arg.partition("=")
        if key in ("-e", "--env", "-w", "--workdir", "--timeout") and (eq and key.startswith("--")
                                                                      or not eq):
            if not eq:
                if i >= len(args):
                    return None
                value, i = args[i], i + 1
            if key in ("-e", "--env"):
                env.append(value)
            else:
                options[key.lstrip("-")[0]] = value  # "w" or "t"
            continue
        return None  # -h, --help, -eK=V, unknown options: typer's
    if len(positional) < 2:
        return None
    params: dict[str, Any] = {"name": positional[0], "argv": positional[1:], "env": env}
    if "w" in options:
        params["workdir"] = options["w"]
    if "t" in options:
        try:
            timeout = float(options["t"])
        except ValueError:
            return None
        if not 0.001 <= timeout < float("inf"):
            return None
        params["timeout_s"] = timeout
    return params, use_tty


def _fast_exec(args: list[str]) -> int | None:
    """``iii worker exec`` without typer; None when typer should handle ``args``."""
    parsed = _parse_exec(args)
    if parsed is None:
        return None
    params, use_tty = parsed
    from client.errors import CliError

    try:
        from client.exec_cli import env_pairs, run_exec

        params["env"] = env_pairs(params["env"])

        return run_exec(params, sys.stdin.isatty() if use_tty is None else use_tty)
    except CliError as exc:
        from client.output import print_error

        print_error(exc)
        return 1
    except KeyboardInterrupt:
        return 130


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


def _dispatch_fast(argv: tuple[str, ...]) -> None:
    """Exit here when a typer-free path answers ``argv`` (``worker ...``)."""
    method = _FAST_COMMANDS.get(argv)
    if method is not None:
        sys.exit(_fast(method, argv[-1] == "--json"))
    export = _export_params(argv)
    if export is not None:
        sys.exit(_fast("worker.export", True, export))
    if argv[:2] == ("worker", "exec"):
        code = _fast_exec(list(argv[2:]))
        if code is not None:
            sys.exit(code)


def main() -> None:
    """``iii``."""
    _dispatch_fast(tuple(sys.argv[1:]))
    from client.commands import app

    app()


def worker_main() -> None:
    """``iii-worker``: the worker group on its own (the upstream engine CLI dispatches to it)."""
    _dispatch_fast(("worker", *sys.argv[1:]))
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
