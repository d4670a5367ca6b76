"""The ``iii`` command line: a thin typer client of the daemon (SPEC §12).

Start-up must stay fast: this module imports nothing heavy. The typer command tree lives in
``client.commands`` (imported on first use; ``from client.cli import app`` still works). The
commands scripts call in loops (``iii worker list``, ``iii image list``, ``iii worker export``)
and ``iii worker exec`` (its round trip is the developer loop's unit of latency) are answered
without importing typer at all: ``client.cli_grammar`` (the options typer's definitions are built
from too) reads their usual forms, and they run the same ``client.actions`` function typer's
command runs, so output and errors are the same. Anything else (``--help``, an unknown or
malformed option, a missing argument) goes to typer, which prints its own usage error.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from client.cli_grammar import Grammar

# Why a fast path: typer imports its vendored click, rich and the command tree, ~45 ms before a
# command body runs, more than the rest of the run (measured against a scripted daemon, medians:
# `iii worker list --json` 35 ms here, 90 ms through typer; `worker exec NAME true` 42 / 90 ms;
# `worker export NAME --to oci:DIR --json` 36 / 81 ms). The human `worker list` also imports
# msgspec and the wire types to read the result (~20 ms).


def _fast_commands() -> dict[tuple[str, ...], tuple[Grammar, Callable[..., int | None]]]:
    """Command path → (its grammar, its action) for the commands answered without typer."""
    from client import actions
    from client.cli_grammar import IMAGE_LIST, WORKER_EXEC, WORKER_EXPORT, WORKER_LIST

    return {WORKER_LIST.path: (WORKER_LIST, actions.worker_list),
            IMAGE_LIST.path: (IMAGE_LIST, actions.image_list),
            WORKER_EXEC.path: (WORKER_EXEC, actions.worker_exec),
            WORKER_EXPORT.path: (WORKER_EXPORT, actions.worker_export)}


def fast_parse(argv: tuple[str, ...]) -> tuple[Callable[..., int | None], dict[str, Any]] | None:
    """``argv`` (after the program name) → (the action, its keyword arguments) when the fast
    path answers it; None for typer."""
    if argv[:1] not in (("worker",), ("image",)):
        return None
    from client.actions import export_usage_ok
    from client.cli_grammar import WORKER_EXPORT, parse

    found = _fast_commands().get(argv[:2])
    if found is None:
        return None
    grammar, action = found
    kwargs = parse(grammar, list(argv[2:]))
    if kwargs is None or grammar is WORKER_EXPORT \
            and not export_usage_ok(kwargs["to"], kwargs["kubernetes"]):
        return None  # typer's (with its usage error)
    return action, kwargs


def _dispatch_fast(argv: tuple[str, ...]) -> None:
    """Exit here when the typer-free path answers ``argv``; return to let typer parse it."""
    fast = fast_parse(argv)
    if fast is None:
        return
    action, kwargs = fast
    from client.errors import CliError

    try:
        code = action(**kwargs)
    except CliError as exc:
        from client.output import print_error

        print_error(exc)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code or 0)


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
