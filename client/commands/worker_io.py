"""``iii worker export|list|inspect|exec|status|logs``: looking at a worker, running a command in
it, getting it out as an image. The options of ``export``, ``list`` and ``exec`` are
``client.cli_grammar``'s (the fast path parses the same ones) and their bodies are
``client.actions``' (the fast path runs the same ones)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from client import actions
from client.cli_grammar import WORKER_EXEC, WORKER_EXPORT, WORKER_LIST
from client.commands.common import JSON_OPT, run_cli, typer_argument, typer_option, worker_app
from client.output import print_json_raw, print_kv, print_warnings
from client.rpc_client import RpcClient

if TYPE_CHECKING:
    from client.protocol.messages import SandboxIsolation, WorkerInspectResult

X = WORKER_EXPORT


@worker_app.command("export")
def worker_export(
    name: str = typer_argument(X, "name"),
    to: str | None = typer_option(X, "to"),
    kubernetes: bool = typer_option(X, "kubernetes"),
    image: str | None = typer_option(X, "image"),
    namespace: str = typer_option(X, "namespace"),
    engine_url: str | None = typer_option(X, "engine_url"),
    runtime_class: str | None = typer_option(X, "runtime_class"),
    replicas: int = typer_option(X, "replicas"),
    output: Path | None = typer_option(X, "output"),  # noqa: B008
    as_json: bool = typer_option(X, "as_json"),
) -> None:
    """Export a prepared worker as an OCI image, or Kubernetes YAML to run it."""
    if not actions.export_usage_ok(to, kubernetes):
        raise typer.BadParameter("give exactly one of --to and --kubernetes", param_hint="--to")
    run_cli(lambda: actions.worker_export(
        name=name, to=to, kubernetes=kubernetes, image=image, namespace=namespace,
        engine_url=engine_url, runtime_class=runtime_class, replicas=replicas, output=output,
        as_json=as_json))


@worker_app.command("list")
def worker_list(as_json: bool = typer_option(WORKER_LIST, "as_json")) -> None:
    """List workers in config.yaml order."""
    run_cli(lambda: actions.worker_list(as_json=as_json))


@worker_app.command("inspect")
def worker_inspect(name: str = typer.Argument(..., help="Worker name."),
                   as_json: bool = JSON_OPT) -> None:
    """Show a worker's state, resolved manifest and paths."""

    def body() -> None:
        if as_json:
            actions.print_result("worker.inspect", {"name": name})
            return
        from client.protocol.messages import WorkerInspectResult

        _print_inspect(actions.call("worker.inspect", {"name": name}, WorkerInspectResult))

    run_cli(body)


def _print_inspect(w: WorkerInspectResult) -> None:
    manifest, paths = w.manifest, w.paths  # neither for a config worker: the engine serves it
    scripts = None if manifest is None else manifest.scripts
    print_kv([
        ("name", w.name), ("type", w.type), ("source", w.source),
        ("status", w.status), ("pid", w.pid),
        ("isolation", w.isolation), ("engine", w.engine_registered),
        ("restarts", w.restarts), ("last exit", _last_exit(w)),
        ("image", w.image or (None if manifest is None else manifest.base_image)),
        ("kind", None if manifest is None else manifest.kind),
        ("setup", None if scripts is None else scripts.setup),
        ("install", None if scripts is None else scripts.install),
        ("start", None if scripts is None else scripts.start),
    ] + ([] if paths is None else [("sandbox", paths.sandbox), ("logs", paths.logs)])
        + _isolation_rows(w.isolation_detail))
    print_warnings(w.warnings)


def _last_exit(w: WorkerInspectResult) -> Any:
    """The last exit code, with the launcher's reason when it gave one (an OOM kill)."""
    code, error = w.last_exit_code, w.last_error
    return f"{code} ({error})" if code is not None and error else code


def _isolation_rows(detail: SandboxIsolation | None) -> list[tuple[str, Any]]:
    """The running sandbox's isolation block of ``inspect`` (nothing while none runs)."""
    if detail is None:
        return []
    nnp = detail.no_new_privs
    return [("isolation:", ""), ("  backend", detail.backend),
            ("  network", detail.network), ("  ids", detail.id_map),
            ("  no_new_privs", "unknown" if nnp is None else ("yes" if nnp else "no")),
            ("  seccomp", detail.seccomp or "none"), ("  limits", detail.limits)]


E = WORKER_EXEC


@worker_app.command("exec")
def worker_exec(
    name: str = typer_argument(E, "name"),
    command: list[str] = typer_argument(E, "command"),  # noqa: B008
    env: list[str] = typer_option(E, "env"),  # noqa: B008
    workdir: str | None = typer_option(E, "workdir"),
    use_tty: bool | None = typer_option(E, "use_tty"),
    timeout: float | None = typer_option(E, "timeout"),
) -> None:
    """Run a command in a running worker's sandbox; exits with the command's code."""
    raise typer.Exit(run_cli(lambda: actions.worker_exec(
        name=name, command=command, env=env, workdir=workdir, use_tty=use_tty,
        timeout=timeout)))


@worker_app.command("status")
def worker_status(
    name: str = typer.Argument(..., help="Worker name."),
    watch: bool = typer.Option(True, "--watch/--no-watch",
                               help="Follow changes live (default on a terminal)."),
    as_json: bool = JSON_OPT,
) -> None:
    """One worker at a glance: phase, pid, uptime, restarts, isolation, engine, last log lines."""
    from client.status_view import run_status

    run_cli(lambda: run_status(name, as_json, watch))


@worker_app.command("logs")
def worker_logs(
    name: str = typer.Argument(..., help="Worker name."),
    tail: int = typer.Option(100, "--tail", "-n", min=0, help="Lines from the end."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    as_json: bool = JSON_OPT,
) -> None:
    """Print a worker's log; with -f, follow it until Ctrl-C."""
    params = {"name": name, "tail": tail, "follow": follow}
    run_cli(lambda: _logs_json(params, follow) if as_json else _logs(params, follow))


def _logs(params: dict[str, Any], follow: bool) -> None:
    from client.protocol.messages import LogNotification, WorkerLogsResult
    from client.rpc_client import decode

    def on_log(method: str, params: Any) -> None:
        if method == "log":
            print(decode(params, LogNotification, "log notification").line, flush=True)

    with RpcClient() as client:
        result = client.call("worker.logs", params, on_notification=on_log,
                             result_type=WorkerLogsResult)
        for line in result.lines:
            print(line)
        sys.stdout.flush()
        if follow:
            client.follow(on_log)


def _logs_json(params: dict[str, Any], follow: bool) -> None:
    """The result verbatim, then (with -f) one JSON line per log line."""

    def on_log_json(method: str, params: Any) -> None:
        if method == "log":
            import msgspec

            print_json_raw(msgspec.json.encode(params))

    with RpcClient() as client:
        print_json_raw(client.call_raw("worker.logs", params, on_notification=on_log_json))
        if follow:
            client.follow(on_log_json)
