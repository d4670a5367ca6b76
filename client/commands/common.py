"""What every typer command module shares: the command groups, ``run_cli`` (errors → ``error:``
lines), the ``--json`` option, and the builders of ``typer.Option`` / ``typer.Argument`` from
``client.cli_grammar`` (the one definition of the fast-path commands' options)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import typer

from client.cli_grammar import JSON, Grammar
from client.errors import CliError
from client.output import print_error

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, help="iii sandbox workers.")
worker_app = typer.Typer(no_args_is_help=True, add_completion=False,
                         help="Manage sandbox workers.")
image_app = typer.Typer(no_args_is_help=True, help="Manage the image cache.")
daemon_app = typer.Typer(no_args_is_help=True, help="Run and control the iii daemon.")

# Flags the upstream `iii` engine CLI passes to `iii-worker start|stop`; accepted and ignored.
IGNORED_PORT = typer.Option(None, "--port", hidden=True)
IGNORED_ADDRESS = typer.Option(None, "--address", hidden=True)
IGNORED_NO_WAIT = typer.Option(False, "--no-wait", hidden=True)
IGNORED_CONFIG = typer.Option(None, "--config", hidden=True)
IGNORED_YES = typer.Option(False, "-y", "--yes", hidden=True)


def typer_option(grammar: Grammar, dest: str) -> Any:
    """The ``typer.Option`` of ``grammar``'s option ``dest``."""
    option = grammar.option(dest)
    return typer.Option(option.default, *option.flags, help=option.help, min=option.min)


def typer_argument(grammar: Grammar, dest: str) -> Any:
    """The ``typer.Argument`` of ``grammar``'s (required) argument ``dest``."""
    return typer.Argument(..., help=grammar.argument(dest).help)


JSON_OPT = typer.Option(JSON.default, *JSON.flags, help=JSON.help)


def run_cli(action: Callable[[], T]) -> T:
    """Run a command body: CliError → ``error:`` lines and exit 1; Ctrl-C → exit 130."""
    try:
        return action()
    except CliError as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
