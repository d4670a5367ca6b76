"""``iii image pull|list`` (the rootfs cache) and ``iii daemon run|status|stop``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from client import actions
from client.cli_grammar import IMAGE_LIST
from client.commands.common import JSON_OPT, daemon_app, image_app, run_cli, typer_option
from client.errors import DaemonUnavailable
from client.output import print_json_raw, print_kv
from client.rpc_client import CONTROL_REPLY_TIMEOUT_S, RpcClient

if TYPE_CHECKING:
    from client.protocol.messages import DaemonInfoResult

DAEMON_STOP_DEADLINE_S = 120.0  # stopping workers can take stop_timeout_s each, in parallel


@image_app.command("pull")
def image_pull(ref: str = typer.Argument(..., help="Image reference, e.g. python:3.12-slim."),
               refresh: bool = typer.Option(False, "--refresh", help="Pull even if cached."),
               as_json: bool = JSON_OPT) -> None:
    """Pull an image into the rootfs cache."""

    def body() -> None:
        params = {"ref": ref, "refresh": refresh}
        if as_json:
            actions.print_result("image.pull", params)
            return
        from client.protocol.messages import ImagePullResult

        result = actions.call("image.pull", params, ImagePullResult, progress=True)
        print(f"{result.ref} {result.digest} ({result.size_bytes / (1024 * 1024):.1f} MiB)")

    run_cli(body)


@image_app.command("list")
def image_list(as_json: bool = typer_option(IMAGE_LIST, "as_json")) -> None:
    """List cached images."""
    run_cli(lambda: actions.image_list(as_json=as_json))


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
                from client.protocol.messages import DaemonInfoResult

                info = client.call("daemon.info", result_type=DaemonInfoResult)
            except DaemonUnavailable as exc:
                if as_json or "no iii daemon is running" not in exc.message:
                    raise
                print(f"daemon: not running (socket {client.socket_path})")
                raise typer.Exit(1) from None
        _print_info(info)

    run_cli(body)


def _print_info(info: DaemonInfoResult) -> None:
    engine, isolation = info.engine, info.isolation
    host = isolation.host
    print_kv([
        ("daemon", f"running (pid {info.pid}, version {info.version})"),
        ("socket", info.socket), ("home", info.home), ("config", info.config_path),
        ("engine", f"{engine.url} ({'reachable' if engine.reachable else 'unreachable'})"),
        ("isolation", isolation.default),
        *[(f"  {name}", "available" if b.available else f"unavailable: {b.reason}")
          for name, b in isolation.backends.items()],
        *([] if host is None else [("  network", host.network), ("  ids", host.ids),
                                   ("  cgroups", host.cgroups)]),
    ])


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
