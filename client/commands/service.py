"""`iii service install | uninstall | status` (SPEC §12): the typer group; logic in client.service.

Mounted by the CLI with ``app.add_typer(service_app, name="service")``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import typer

service_app = typer.Typer(
    no_args_is_help=True,
    help="Run the daemon as a user service (systemd user units or a macOS LaunchAgent).",
)


class PlatformChoice(enum.StrEnum):
    auto = "auto"
    systemd = "systemd"
    launchd = "launchd"


DRY_RUN = typer.Option(False, "--dry-run", help="Print the files and commands; change nothing.")
PLATFORM = typer.Option(
    PlatformChoice.auto, "--platform",
    help="Service manager to target (auto: systemd on Linux, launchd on macOS).")


def _run(action: str, platform: PlatformChoice, dry_run: bool) -> int:
    from client import service
    from client.errors import ServiceError

    steps: dict[str, Callable[..., int | None]] = {
        "install": service.install, "uninstall": service.uninstall, "status": service.status,
    }
    try:
        target = (service.detect_platform() if platform is PlatformChoice.auto
                  else service.ServicePlatform(platform.value))
        plan = service.plan_service(target)
        return steps[action](plan, dry_run=dry_run, out=typer.echo) or 0
    except ServiceError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 1


@service_app.command("install")
def install_cmd(dry_run: bool = DRY_RUN, platform: PlatformChoice = PLATFORM) -> None:
    """Write the unit files (or LaunchAgent) for this installation and start the service."""
    raise typer.Exit(_run("install", platform, dry_run))


@service_app.command("uninstall")
def uninstall_cmd(dry_run: bool = DRY_RUN, platform: PlatformChoice = PLATFORM) -> None:
    """Stop and disable the service and remove its files."""
    raise typer.Exit(_run("uninstall", platform, dry_run))


@service_app.command("status")
def status_cmd(dry_run: bool = DRY_RUN, platform: PlatformChoice = PLATFORM) -> None:
    """Show whether the service is installed and running (exit 3 when it is not running)."""
    raise typer.Exit(_run("status", platform, dry_run))

