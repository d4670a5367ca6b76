"""The typer command tree of ``iii`` (SPEC §12): worker, image, daemon and service groups.

Each command is a thin call of one socket method (``client.rpc_client``); human output comes
from ``client.output``. ``--json`` prints the protocol result verbatim. Errors: ``error: …``
(+ ``hint: …``) on stderr and exit 1; usage errors exit 2 (click).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from client.errors import CliError, DaemonUnavailable, InvalidState
from client.output import (
    ProgressView,
    print_error,
    print_json_raw,
    print_kv,
    print_table,
    print_workers,
)
from client.rpc_client import CONTROL_REPLY_TIMEOUT_S, RpcClient
from client.sandbox_cli import sandbox_app
from client.service_cli import service_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help="iii sandbox workers.")
worker_app = typer.Typer(no_args_is_help=True, add_completion=False,
                         help="Manage sandbox workers.")
image_app = typer.Typer(no_args_is_help=True, help="Manage the image cache.")
daemon_app = typer.Typer(no_args_is_help=True, help="Run and control the iii daemon.")
app.add_typer(worker_app, name="worker")
app.add_typer(image_app, name="image")
app.add_typer(daemon_app, name="daemon")
app.add_typer(service_app, name="service")
app.add_typer(sandbox_app, name="sandbox")

T = TypeVar("T")
DAEMON_STOP_DEADLINE_S = 120.0  # stopping workers can take stop_timeout_s each, in parallel
JSON_OPT = typer.Option(False, "--json", help="Print the daemon's JSON result verbatim.")
# Flags the upstream `iii` engine CLI passes to `iii-worker start|stop`; accepted and ignored.
IGNORED_PORT = typer.Option(None, "--port", hidden=True)
IGNORED_ADDRESS = typer.Option(None, "--address", hidden=True)
IGNORED_NO_WAIT = typer.Option(False, "--no-wait", hidden=True)
IGNORED_CONFIG = typer.Option(None, "--config", hidden=True)
IGNORED_YES = typer.Option(False, "-y", "--yes", hidden=True)


def run_cli(action: Callable[[], T]) -> T:
    """Run a command body: CliError → ``error:`` lines and exit 1; Ctrl-C → exit 130."""
    try:
        return action()
    except CliError as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _call(method: str, params: dict[str, Any] | None = None, *, as_json: bool = False,
          progress: bool = False) -> Any:
    """One request with autostart; prints the raw result and returns None when ``as_json``."""
    with RpcClient() as client:
        if progress and not as_json:
            params = {**(params or {}), "progress": True}
            with ProgressView() as view:
                return client.call(method, params, on_notification=view)
        if as_json:
            print_json_raw(client.call_raw(method, params))
            return None
        return client.call(method, params)


def resolve_target(target: str) -> str:
    """SPEC §5: local targets (``.``, ``/``, ``~``) become absolute paths on the client's side."""
    if target.startswith(("~", ".", "/")):
        return os.path.abspath(os.path.expanduser(target))
    return target


def _print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


# ---- worker ---------------------------------------------------------------------------------

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
    from client.errors import CliError, ScaffoldError
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
        result = _call("worker.add", params, as_json=as_json, progress=True)
        if result is None:
            return
        _print_warnings(result.get("warnings", []))
        worker = result["worker"]
        started = "started" if result.get("started") else \
            "not started (it starts when the engine is running)"
        print(f"added worker '{worker['name']}' ({worker['type']}): {started}")

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
            worker = _call(method, params, as_json=as_json, progress=progress)
        except InvalidState:
            # start of a running / stop of a stopped worker is a success (upstream relies on it)
            current = _current_status(params["name"]) if idempotent_status else None
            if current is not None and current.get("type") == "config":
                # The upstream `iii` CLI spawns `iii-worker start|stop` for builtin config
                # workers (SPEC §12): the engine serves them, so there is nothing to do here.
                print(f"note: worker '{current['name']}' is a config worker served by the "
                      "engine; there is nothing to start or stop here", file=sys.stderr)
            elif current is None or current.get("status") != idempotent_status:
                raise
            worker = current
            if as_json:
                import msgspec

                print_json_raw(msgspec.json.encode(worker))
                return
        if worker is not None:
            pid = worker.get("pid")
            print(f"worker '{worker['name']}': {worker['status']}"
                  + (f" (pid {pid})" if pid else ""))

    run_cli(body)


def _last_exit(w: dict[str, Any]) -> Any:
    """The last exit code, with the launcher's reason when it gave one (an OOM kill)."""
    code, error = w.get("last_exit_code"), w.get("last_error")
    return f"{code} ({error})" if code is not None and error else code


def _current_status(name: str) -> dict[str, Any] | None:
    try:
        with RpcClient() as client:
            workers = client.call("worker.list").get("workers", [])
    except CliError:
        return None
    return next((w for w in workers if w.get("name") == name), None)


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
        result = _call("worker.remove", {"name": name}, as_json=as_json)
        if result is not None:
            freed = result.get("freed_bytes", 0) / (1024 * 1024)
            print(f"removed worker '{name}' (freed {freed:.1f} MiB)")

    run_cli(body)


@worker_app.command("export")
def worker_export(
    name: str = typer.Argument(..., help="Worker name."),
    to: str | None = typer.Option(None, "--to", help="oci:DIR[:TAG] (an OCI image layout on "
                                  "disk) or REGISTRY/REPO:TAG to push."),
    kubernetes: bool = typer.Option(False, "--kubernetes",
                                    help="Print Kubernetes YAML (Deployment + Secret)."),
    image: str | None = typer.Option(None, "--image",
                                     help="With --kubernetes: REPO@sha256:..., or REPO:TAG to "
                                     "use the digest the registry gives for the tag now "
                                     "(default: the worker's last push)."),
    namespace: str = typer.Option("default", "--namespace"),
    engine_url: str | None = typer.Option(None, "--engine-url",
                                          help="The engine as pods reach it."),
    runtime_class: str | None = typer.Option(None, "--runtime-class",
                                             help="e.g. kata or krun: microVM pods."),
    replicas: int = typer.Option(1, "--replicas", min=0),
    output: Path | None = typer.Option(None, "--output", "-o",  # noqa: B008
                                       help="Write the YAML here instead of printing it."),
    as_json: bool = JSON_OPT,
) -> None:
    """Export a prepared worker as an OCI image, or Kubernetes YAML to run it."""
    if (to is None) == (not kubernetes):
        raise typer.BadParameter("give exactly one of --to and --kubernetes", param_hint="--to")

    def body() -> None:
        if kubernetes:
            params: dict[str, Any] = {"name": name, "namespace": namespace,
                                      "replicas": replicas}
            for key, value in (("image", image), ("engine_url", engine_url),
                               ("runtime_class", runtime_class)):
                if value is not None:
                    params[key] = value
            result = _call("worker.kubernetes", params, as_json=as_json)
            if result is None:
                return
            if image is not None and result["image"] != image:  # a tag, pinned by the daemon
                print(f"using {result['image']} (the digest {image} names at its registry now)",
                      file=sys.stderr)
            if output is None:
                print(result["yaml"], end="")
                return
            tmp = output.with_name(f".{output.name}.tmp")
            tmp.write_text(result["yaml"])
            os.replace(tmp, output)
            print(f"wrote {output} (image {result['image']})")
            return
        assert to is not None
        dest = to
        if dest.startswith("oci:") and len(dest) > 4:
            # the daemon has its own working directory: send it an absolute path
            dest = "oci:" + os.path.abspath(dest[4:])
        done = _call("worker.export", {"name": name, "to": dest}, as_json=as_json,
                     progress=True)
        if done is not None:
            size = done.get("size", 0) / (1024 * 1024)
            print(f"exported worker '{name}' to {done.get('destination')}")
            print(f"digest {done.get('digest')} (added layer {size:.1f} MiB)")

    run_cli(body)


@worker_app.command("list")
def worker_list(as_json: bool = JSON_OPT) -> None:
    """List workers in config.yaml order."""

    def body() -> None:
        result = _call("worker.list", as_json=as_json)
        if result is not None:
            print_workers(result.get("workers", []), result.get("engine_age_s"),
                          result.get("config_error"))

    run_cli(body)


@worker_app.command("inspect")
def worker_inspect(name: str = typer.Argument(..., help="Worker name."),
                   as_json: bool = JSON_OPT) -> None:
    """Show a worker's state, resolved manifest and paths."""

    def body() -> None:
        w = _call("worker.inspect", {"name": name}, as_json=as_json)
        if w is None:
            return
        manifest = w.get("manifest") or {}
        scripts = manifest.get("scripts") or {}
        paths = w.get("paths")
        print_kv([
            ("name", w.get("name")), ("type", w.get("type")), ("source", w.get("source")),
            ("status", w.get("status")), ("pid", w.get("pid")),
            ("isolation", w.get("isolation")), ("engine", w.get("engine_registered")),
            ("restarts", w.get("restarts")), ("last exit", _last_exit(w)),
            ("image", w.get("image") or manifest.get("base_image")),
            ("kind", manifest.get("kind")), ("setup", scripts.get("setup")),
            ("install", scripts.get("install")), ("start", scripts.get("start")),
        ] + ([] if paths is None else [  # none for a config worker: the engine serves it
            ("sandbox", paths.get("sandbox")), ("logs", paths.get("logs"))])
            + _isolation_rows(w.get("isolation_detail")))
        _print_warnings(w.get("warnings", []))

    run_cli(body)


def _isolation_rows(detail: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """The running sandbox's isolation block of ``inspect`` (nothing while none runs)."""
    if not detail:
        return []
    nnp = detail.get("no_new_privs")
    return [("isolation:", ""), ("  backend", detail.get("backend")),
            ("  network", detail.get("network")), ("  ids", detail.get("id_map")),
            ("  no_new_privs", "unknown" if nnp is None else ("yes" if nnp else "no")),
            ("  seccomp", detail.get("seccomp") or "none"), ("  limits", detail.get("limits"))]


@worker_app.command("exec")
def worker_exec(
    name: str = typer.Argument(..., help="A running worker."),
    command: list[str] = typer.Argument(..., help="The command and its arguments (after --)."),  # noqa: B008
    env: list[str] = typer.Option([], "--env", "-e", help="K=V for the command (repeatable)."),  # noqa: B008
    workdir: str | None = typer.Option(None, "--workdir", "-w",
                                       help="In-sandbox directory (default: the worker's)."),
    use_tty: bool | None = typer.Option(None, "--tty/--no-tty", "-t",
                                        help="A pty for the command (default: when stdin is one)."),
    timeout: float | None = typer.Option(None, "--timeout", min=0.001,
                                         help="Seconds; then the command is stopped, exit 124."),
) -> None:
    """Run a command in a running worker's sandbox; exits with the command's code."""

    def body() -> int:
        from client.exec_cli import env_pairs, run_exec

        params: dict[str, Any] = {"name": name, "argv": command, "env": env_pairs(env)}
        if workdir is not None:
            params["workdir"] = workdir
        if timeout is not None:
            params["timeout_s"] = timeout

        return run_exec(params, sys.stdin.isatty() if use_tty is None else use_tty)

    raise typer.Exit(run_cli(body))


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

    def on_log(method: str, params: Any) -> None:
        if method == "log" and isinstance(params, dict):
            print(params.get("line", ""), flush=True)

    def on_log_json(method: str, params: Any) -> None:
        if method == "log":
            import msgspec

            print_json_raw(msgspec.json.encode(params))

    def body() -> None:
        with RpcClient() as client:
            params = {"name": name, "tail": tail, "follow": follow}
            if as_json:  # the result verbatim, then (with -f) one JSON line per log line
                print_json_raw(client.call_raw("worker.logs", params,
                                               on_notification=on_log_json))
                if follow:
                    client.follow(on_log_json)
                return
            result = client.call("worker.logs", params, on_notification=on_log)
            for line in result.get("lines", []):
                print(line)
            sys.stdout.flush()
            if follow:
                client.follow(on_log)

    run_cli(body)


# ---- image ----------------------------------------------------------------------------------

@image_app.command("pull")
def image_pull(ref: str = typer.Argument(..., help="Image reference, e.g. python:3.12-slim."),
               refresh: bool = typer.Option(False, "--refresh", help="Pull even if cached."),
               as_json: bool = JSON_OPT) -> None:
    """Pull an image into the rootfs cache."""

    def body() -> None:
        result = _call("image.pull", {"ref": ref, "refresh": refresh}, as_json=as_json,
                       progress=True)
        if result is not None:
            size = result.get("size_bytes", 0) / (1024 * 1024)
            print(f"{result['ref']} {result['digest']} ({size:.1f} MiB)")

    run_cli(body)


@image_app.command("list")
def image_list(as_json: bool = JSON_OPT) -> None:
    """List cached images."""

    def body() -> None:
        result = _call("image.list", as_json=as_json)
        if result is None:
            return
        rows = [[i["ref"], i["digest"][:19], f"{i['size_bytes'] / 1048576:.1f} MiB"]
                for i in result.get("images", [])]
        if rows:
            print_table(("REF", "DIGEST", "SIZE"), rows)
        else:
            print("no cached images")

    run_cli(body)


# ---- daemon ---------------------------------------------------------------------------------

@daemon_app.command("run")
def daemon_run(
    config: Path | None = typer.Option(None, "--config", help="Worker registry path."),  # noqa: B008
    keep_workers: bool = typer.Option(False, "--keep-workers",
                                      help="On shutdown leave workers running (upgrades)."),
) -> None:
    """Run the daemon in the foreground (what autostart and the service units run)."""
    argv = [sys.executable, "-P", "-m", "daemon", "run"]
    if config is not None:
        argv += ["--config", str(config.expanduser().absolute())]
    if keep_workers:
        argv.append("--keep-workers")
    sys.stdout.flush()
    os.execv(sys.executable, argv)  # the client never imports the daemon (SPEC §1)


@daemon_app.command("status")
def daemon_status(as_json: bool = JSON_OPT) -> None:
    """Show whether a daemon runs, and what it sees (engine, isolation backends)."""

    def body() -> None:
        with RpcClient(autostart=False, reply_timeout_s=CONTROL_REPLY_TIMEOUT_S) as client:
            try:
                if as_json:
                    print_json_raw(client.call_raw("daemon.info"))
                    return
                info = client.call("daemon.info")
            except DaemonUnavailable as exc:
                if as_json or "no iii daemon is running" not in exc.message:
                    raise
                print(f"daemon: not running (socket {client.socket_path})")
                raise typer.Exit(1) from None
        backends = info["isolation"]["backends"]
        print_kv([
            ("daemon", f"running (pid {info['pid']}, version {info['version']})"),
            ("socket", info["socket"]), ("home", info["home"]),
            ("config", info["config_path"]),
            ("engine", (f"{info['engine']['url']} "
                       f"({'reachable' if info['engine']['reachable'] else 'unreachable'})")),
            ("isolation", info["isolation"]["default"]),
            *[(f"  {name}", "available" if b["available"] else f"unavailable: {b.get('reason')}")
              for name, b in backends.items()],
            *[(f"  {key}", value) for key, value in (info["isolation"].get("host") or {}).items()],
        ])

    run_cli(body)


@daemon_app.command("stop")
def daemon_stop(keep_workers: bool = typer.Option(
        False, "--keep-workers", help="Leave workers running for the next daemon.")) -> None:
    """Ask the daemon to shut down (stopping its workers unless --keep-workers) and wait."""
    from client.rpc_client import stop_daemon

    def body() -> None:
        try:
            stop_daemon(stop_workers=not keep_workers, deadline_s=DAEMON_STOP_DEADLINE_S)
        except DaemonUnavailable as exc:
            if "no iii daemon is running" in exc.message:
                print("the daemon is not running")
                return
            raise
        print("daemon stopped")

    run_cli(body)
