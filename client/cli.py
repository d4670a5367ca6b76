"""The ``iii`` command line: a thin typer client of the daemon (SPEC §12).

Start-up must stay fast: command bodies import what they need lazily.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="iii sandbox workers.")
worker_app = typer.Typer(no_args_is_help=True, help="Manage sandbox workers.")
app.add_typer(worker_app, name="worker")


@worker_app.command("validate")
def worker_validate(
    path: Path = typer.Argument(..., help="Project directory to resolve."),
    as_json: bool = typer.Option(False, "--json", help="Print the resolved spec as JSON."),
) -> None:
    """Resolve a project's worker spec (manifest or detection) without a daemon."""
    from client.validate import run_validate

    raise typer.Exit(run_validate(path, as_json))


def main() -> None:
    app()


def worker_main() -> None:
    """``iii-worker``: the worker group on its own (the upstream engine CLI dispatches to it)."""
    worker_app()
