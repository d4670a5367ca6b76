"""``iii worker validate|init|add|start|restart|stop|remove``: a worker's life, from a project
directory to its removal."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from client.actions import call, print_result
from client.commands.common import (
    IGNORED_ADDRESS,
    IGNORED_CONFIG,
    IGNORED_NO_WAIT,
    IGNORED_PORT,
    IGNORED_YES,
    JSON_OPT,
    run_cli,
    worker_app,
)
from client.errors import CliError, InvalidState
from client.output import print_json_raw, print_warnings
from client.rpc_client import RpcClient

if TYPE_CHECKING:
    from client.protocol.messages import Worker


def resolve_target(target: str) -> str:
    """SPEC §5: local targets (``.``, ``/``, ``~``) become absolute paths on the client's side."""
    if target.startswith(("~", ".", "/")):
        return os.path.abspath(os.path.expanduser(target))
    return target


@worker_app.command("validate")
def worker_validate(
    path: Path = typer.Argument(..., help="Project directory to resolve."),  # noqa: B008
    as_json: bool = typer.Option(False, "--json", help="Print the resolved spec as JSON."),
) -> None:
    """Resolve a project's worker spec (manifest or detection) without a daemon."""
    from client.validate import run_validate

    raise typer.Exit(run_validate(path, as_json))


@worker_app.command("init")
def worker_init(
    name: str | None = typer.Argument(None, help="Worker name (default: the directory's)."),
    language: str = typer.Option("typescript", "--language", "-l",
                                 help="typescript, javascript, bun, python or rust."),
    directory: Path | None = typer.Option(None, "--dir", "-d",  # noqa: B008
                                          help="Where to write it (default: ./NAME, or .)."),
    force: bool = typer.Option(False, "--force", "-f", help="Write into a non-empty directory."),
) -> None:
    """Write a minimal working worker (manifest, entry, dependencies on the real iii SDK)."""
    from client.errors import ScaffoldError
    from client.scaffold import LANGUAGES, write_worker
    from manifests import ManifestError, validate_worker_name

    def body() -> None:
        target = (directory or Path(name or ".")).expanduser().resolve()
        worker = name or target.name
        if language not in LANGUAGES:
            raise CliError(f"unknown language {language!r}", f"use one of {', '.join(LANGUAGES)}")
        try:
            validate_worker_name(worker)
        except (ManifestError, ValueError) as exc:
            raise CliError(str(exc), "pass a NAME, or use a directory named after the worker") \
                from None
        try:
            files = write_worker(target, worker, language, force=force)
        except (ScaffoldError, OSError) as exc:
            raise CliError(str(exc)) from None
        for path in files:
            print(f"wrote {path}")
        print(f"next: iii worker add {target}")

    run_cli(body)


@worker_app.command("add")
def worker_add(
    target: str = typer.Argument(..., help="./project, an OCI image reference, or a config name."),
    name: str | None = typer.Option(None, "--name", help="Worker name (default: derived)."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing worker."),
    reset_config: bool = typer.Option(False, "--reset-config",
                                      help="With --force: drop the old entry's config."),
    no_watch: bool = typer.Option(False, "--no-watch",
                                  help="No hot reload for this local worker (watch: false)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Register, prepare and (when the engine runs) start a worker."""
    if reset_config and not force:
        raise typer.BadParameter("--reset-config only makes sense with --force",
                                 param_hint="--reset-config")
    params: dict[str, Any] = {"target": resolve_target(target), "force": force,
                              "reset_config": reset_config}
    if no_watch:
        params["watch"] = False
    if name is not None:
        _check_name(name)
        params["name"] = name
    if _looks_like_a_forgotten_dot(target):
        print(f"error: '{target}' names a config worker (an engine builtin), but ./{target} is "
              f"a directory here\nhint: did you mean ./{target}?", file=sys.stderr)
        raise typer.Exit(1)

    def body() -> None:
        if as_json:
            print_result("worker.add", params)
            return
        from client.protocol.messages import WorkerAddResult

        result = call("worker.add", params, WorkerAddResult, progress=True)
        print_warnings(result.warnings)
        started = "started" if result.started else \
            "not started (it starts when the engine is running)"
        print(f"added worker '{result.worker.name}' ({result.worker.type}): {started}")

    run_cli(body)


def _looks_like_a_forgotten_dot(target: str) -> bool:
    """A bare name is a config worker (SPEC §5); when a directory of that name is right here
    the user almost surely meant the project, and a bogus config entry would be written."""
    return not target.startswith(("~", ".", "/")) and "/" not in target \
        and ":" not in target and Path(target).is_dir()


def _check_name(name: str) -> None:
    """``--name`` is checked here, with the manifest's own message, before any daemon is
    started or a sandbox prepared (exit 2: a usage error)."""
    from manifests import ManifestError
    from manifests.spec import validate_worker_name

    try:
        validate_worker_name(name)
    except ManifestError as exc:
        print(f"error: --name: {exc.message}", file=sys.stderr)
        raise typer.Exit(2) from None


def _change_state(method: str, params: dict[str, Any], as_json: bool,
                  idempotent_status: str | None, progress: bool) -> None:
    def body() -> None:
        try:
            if as_json:
                print_result(method, params)
                return
            from client.protocol.messages import Worker

            worker = call(method, params, Worker, progress=progress)
        except InvalidState:
            # start of a running / stop of a stopped worker is a success (upstream relies on it)
            current = _current_status(params["name"]) if idempotent_status else None
            if current is None:
                raise
            worker, as_sent = current
            if worker.type == "config":
                # The upstream `iii` CLI spawns `iii-worker start|stop` for builtin config
                # workers (SPEC §12): the engine serves them, so there is nothing to do here.
                print(f"note: worker '{worker.name}' is a config worker served by the "
                      "engine; there is nothing to start or stop here", file=sys.stderr)
            elif worker.status != idempotent_status:
                raise
            if as_json:
                import msgspec

                print_json_raw(msgspec.json.encode(as_sent))
                return
        print(f"worker '{worker.name}': {worker.status}"
              + (f" (pid {worker.pid})" if worker.pid else ""))

    run_cli(body)


def _current_status(name: str) -> tuple[Worker, Any] | None:
    """The worker called ``name`` as ``worker.list`` shows it: (the typed ``Worker``, the
    object as the daemon sent it, for ``--json``); None when there is none or no answer."""
    from client.protocol.messages import WorkerListResult
    from client.rpc_client import decode

    try:
        with RpcClient() as client:
            as_sent = client.call("worker.list")
    except CliError:
        return None
    listed = decode(as_sent, WorkerListResult, "answer to worker.list")
    found = next((i for i, w in enumerate(listed.workers) if w.name == name), None)
    return None if found is None else (listed.workers[found], as_sent["workers"][found])


@worker_app.command("start")
def worker_start(
    name: str = typer.Argument(..., help="Worker name."),
    as_json: bool = JSON_OPT,
    port: int | None = IGNORED_PORT, address: str | None = IGNORED_ADDRESS,
    no_wait: bool = IGNORED_NO_WAIT, config: str | None = IGNORED_CONFIG,
    yes: bool = IGNORED_YES,
) -> None:
    """Start a worker (a running worker is left as it is)."""
    _change_state("worker.start", {"name": name}, as_json, "running", progress=True)


@worker_app.command("restart")
def worker_restart(name: str = typer.Argument(..., help="Worker name."),
                   as_json: bool = JSON_OPT) -> None:
    """Stop a worker if it runs, then start it."""
    _change_state("worker.restart", {"name": name}, as_json, None, progress=True)


@worker_app.command("stop")
def worker_stop(
    name: str = typer.Argument(..., help="Worker name."),
    timeout: float | None = typer.Option(
        None, "--timeout", "-t", min=0, max=3600,
        help="Seconds to wait after SIGTERM before SIGKILL (default: stop_timeout_s of "
             "daemon.yaml, 10)."),
    as_json: bool = JSON_OPT,
    port: int | None = IGNORED_PORT, address: str | None = IGNORED_ADDRESS,
    no_wait: bool = IGNORED_NO_WAIT, config: str | None = IGNORED_CONFIG,
    yes: bool = IGNORED_YES,
) -> None:
    """Stop a worker (SIGTERM, then SIGKILL after the timeout); a stopped worker stays so."""
    params: dict[str, Any] = {"name": name}
    if timeout is not None:
        params["timeout_s"] = timeout
    _change_state("worker.stop", params, as_json, "stopped", progress=False)


@worker_app.command("remove")
def worker_remove(name: str = typer.Argument(..., help="Worker name."),
                  yes: bool = IGNORED_YES, as_json: bool = JSON_OPT) -> None:
    """Stop a worker, delete its sandbox and its config.yaml entry."""

    def body() -> None:
        if as_json:
            print_result("worker.remove", {"name": name})
            return
        from client.protocol.messages import WorkerRemoveResult

        freed = call("worker.remove", {"name": name}, WorkerRemoveResult).freed_bytes
        print(f"removed worker '{name}' (freed {freed / (1024 * 1024):.1f} MiB)")

    run_cli(body)
