"""`iii service install | uninstall | status`: run the daemon as a user service (SPEC §12, §13).

Linux: systemd user units (``iii-daemon.service`` + ``iii-daemon.socket``) in
``$XDG_CONFIG_HOME/systemd/user``, driven with ``systemctl --user``. macOS: a LaunchAgent in
``~/Library/LaunchAgents``, driven with ``launchctl``. Each step is printed as it is done;
``dry_run`` prints the files and commands instead.

    plan = plan_service(detect_platform())
    install(plan, dry_run=False, out=print)     # raises ServiceError (one line)
"""

from __future__ import annotations

import enum
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from client import service_units as units
from client.errors import ServiceError

Output = Callable[[str], None]


class ServicePlatform(enum.Enum):
    SYSTEMD = "systemd"
    LAUNCHD = "launchd"


class ServiceFile(msgspec.Struct, frozen=True):
    path: Path
    content: str


class Command(msgspec.Struct, frozen=True):
    argv: list[str]
    # launchctl bootout of a job that is not loaded fails; that must not stop an (un)install.
    may_fail: bool = False
    # Ask a daemon already serving the socket to exit (keeping its workers) right before this
    # command: late enough that the service manager has answered, early enough that it is the
    # service manager's daemon that starts next.
    hand_over_first: bool = False


class ServicePlan(msgspec.Struct, frozen=True):
    """Everything install, uninstall and status do, computed up front (so --dry-run is exact)."""

    platform: ServicePlatform
    files: list[ServiceFile]
    install_commands: list[Command]
    uninstall_commands: list[Command]  # run before the files are removed
    after_removal: list[Command]
    status_command: Command
    socket_path: Path
    log_hint: str
    log_dir: Path | None = None  # created before install (launchd opens its log files there)


def detect_platform(sys_platform: str = sys.platform) -> ServicePlatform:
    if sys_platform.startswith("linux"):
        return ServicePlatform.SYSTEMD
    if sys_platform == "darwin":
        return ServicePlatform.LAUNCHD
    raise ServiceError(f"`iii service` supports Linux (systemd) and macOS (launchd), "
                       f"not {sys_platform!r}; run `iii daemon run` yourself")


def iii_command(executable: str = sys.executable) -> list[str]:
    """How a service manager should start this installation's ``iii``: the console script beside
    the interpreter (the venv's ``bin/iii``), else the interpreter running the CLI module."""
    # Not resolved: a venv's python is a symlink to the system one, whose directory has no iii.
    candidate = Path(executable).absolute().parent / "iii"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return [str(candidate)]
    return [str(Path(executable).absolute()), "-m", "client.cli"]


def plan_service(platform: ServicePlatform, *, environ: Mapping[str, str] | None = None,
                 executable: str = sys.executable, uid: int | None = None) -> ServicePlan:
    """Compute the files and commands for ``platform`` from ``environ`` (HOME, XDG_CONFIG_HOME,
    III_HOME, III_SOCKET). Raises ServiceError for paths a unit file cannot hold."""
    env = os.environ if environ is None else environ
    user_home = Path(env.get("HOME") or Path.home())
    default_home = user_home / ".iii"
    iii_home = Path(env.get("III_HOME") or default_home).absolute()
    socket_path = Path(env.get("III_SOCKET") or iii_home / "iii.sock").absolute()
    command = iii_command(executable)
    # Only what differs from the daemon's own defaults is written into the unit.
    overrides: dict[str, str] = {}
    if iii_home != default_home:
        overrides["III_HOME"] = str(iii_home)
    if env.get("III_SOCKET"):
        overrides["III_SOCKET"] = str(socket_path)
    try:
        if platform is ServicePlatform.SYSTEMD:
            return _systemd_plan(env, user_home, command, overrides, socket_path)
        return _launchd_plan(user_home, iii_home, command, overrides, socket_path,
                             os.getuid() if uid is None else uid)
    except ValueError as exc:
        raise ServiceError(str(exc)) from exc


def _systemd_plan(env: Mapping[str, str], user_home: Path, command: list[str],
                  overrides: dict[str, str], socket_path: Path) -> ServicePlan:
    config_home = Path(env.get("XDG_CONFIG_HOME") or user_home / ".config")
    unit_dir = config_home / "systemd" / "user"
    default_socket = user_home / ".iii" / "iii.sock"
    listen = None if socket_path == default_socket else str(socket_path)
    systemctl = ["systemctl", "--user"]
    both = [units.SOCKET_NAME, units.SERVICE_NAME]
    return ServicePlan(
        platform=ServicePlatform.SYSTEMD,
        files=[ServiceFile(unit_dir / units.SERVICE_NAME,
                           units.render_service(command, overrides)),
               ServiceFile(unit_dir / units.SOCKET_NAME, units.render_socket(listen))],
        install_commands=[Command([*systemctl, "daemon-reload"]),
                          Command([*systemctl, "enable", "--now", *both], hand_over_first=True)],
        uninstall_commands=[Command([*systemctl, "disable", "--now", *both])],
        after_removal=[Command([*systemctl, "daemon-reload"])],
        status_command=Command([*systemctl, "--no-pager", "status", *both]),
        socket_path=socket_path,
        log_hint=f"journalctl --user -u {units.SERVICE_NAME}",
    )


def _launchd_plan(user_home: Path, iii_home: Path, command: list[str],
                  overrides: dict[str, str], socket_path: Path, uid: int) -> ServicePlan:
    plist = user_home / "Library" / "LaunchAgents" / units.PLIST_NAME
    domain = f"gui/{uid}"
    target = f"{domain}/{units.LAUNCHD_LABEL}"
    environment = {k: v for k, v in overrides.items() if k != "III_HOME"}
    return ServicePlan(
        platform=ServicePlatform.LAUNCHD,
        files=[ServiceFile(plist, units.render_plist(command, iii_home, environment))],
        # Booting out first makes a reinstall pick up the new plist.
        install_commands=[Command(["launchctl", "bootout", target], may_fail=True,
                                  hand_over_first=True),
                          Command(["launchctl", "bootstrap", domain, str(plist)])],
        uninstall_commands=[Command(["launchctl", "bootout", target], may_fail=True)],
        after_removal=[],
        status_command=Command(["launchctl", "print", target]),
        socket_path=socket_path,
        log_hint=f"{iii_home}/daemon.log",
        log_dir=iii_home,
    )


def install(plan: ServicePlan, *, dry_run: bool, out: Output) -> None:
    """Write the service files and enable/start the service, printing each step."""
    if dry_run:
        for f in plan.files:
            out(f"would write {f.path}:")
            out(f.content.rstrip("\n"))
        if plan.log_dir is not None and not plan.log_dir.is_dir():
            out(f"would create {plan.log_dir} (mode 0700) for the daemon's log")
        out(f"would ask a daemon already serving {plan.socket_path}, if any, to exit and leave "
            "its workers running for the service's daemon")
        for cmd in plan.install_commands:
            out(f"would run: {shlex.join(cmd.argv)}")
        return
    _require_tools(plan.install_commands)
    if plan.log_dir is not None and not plan.log_dir.is_dir():
        plan.log_dir.mkdir(mode=0o700, parents=True)
        os.chmod(plan.log_dir, 0o700)  # mkdir's mode is filtered by the umask
        out(f"created {plan.log_dir}")
    for f in plan.files:
        _write_atomic(f.path, f.content)
        out(f"wrote {f.path}")
    for cmd in plan.install_commands:
        if cmd.hand_over_first:
            _hand_over_from_running_daemon(plan.socket_path, out)
        _run(cmd, out)
    out(f"installed: the daemon runs as a {plan.platform.value} service and serves "
        f"{plan.socket_path}; logs: {plan.log_hint}")


def uninstall(plan: ServicePlan, *, dry_run: bool, out: Output) -> None:
    """Stop and disable the service, remove its files, printing each step."""
    present = [f.path for f in plan.files if f.path.exists()]
    if not present:
        out(f"not installed: no {', '.join(str(f.path) for f in plan.files)}")
        return
    if dry_run:
        for cmd in plan.uninstall_commands:
            out(f"would run: {shlex.join(cmd.argv)}")
        for path in present:
            out(f"would remove {path}")
        for cmd in plan.after_removal:
            out(f"would run: {shlex.join(cmd.argv)}")
        return
    _require_tools(plan.uninstall_commands + plan.after_removal)
    for cmd in plan.uninstall_commands:
        _run(cmd, out)
    for path in present:
        path.unlink()
        out(f"removed {path}")
    for cmd in plan.after_removal:
        _run(cmd, out)


# Exit codes of the status commands that are answers rather than failures.
_SYSTEMCTL_STATUS_NOT_RUNNING = {3, 4}  # inactive / unknown unit (LSB)
_LAUNCHCTL_NOT_LOADED = {113}  # "Could not find service"


def status(plan: ServicePlan, *, dry_run: bool, out: Output) -> int:
    """Report whether the files are installed and what the service manager says.

    Returns 0 when the service is running/loaded, 3 when it is not (LSB ``status`` convention).
    """
    for f in plan.files:
        out(f"{f.path}: {'installed' if f.path.exists() else 'not installed'}")
    if dry_run:
        out(f"would run: {shlex.join(plan.status_command.argv)}")
        return 0
    _require_tools([plan.status_command])
    done = _execute(plan.status_command)
    if done.stdout.strip():
        out(done.stdout.rstrip("\n"))
    not_running = (_SYSTEMCTL_STATUS_NOT_RUNNING if plan.platform is ServicePlatform.SYSTEMD
                   else _LAUNCHCTL_NOT_LOADED)
    if done.returncode == 0:
        out("service: running")
        return 0
    if done.returncode in not_running:
        out("service: not running")
        return 3
    raise _failure(plan.status_command, done)


# Two daemons must never supervise the same home: one started by hand (or by the CLI's autostart)
# keeps serving its socket even after systemd binds a new one over the path.
HANDOVER_RPC_TIMEOUT_S = 5.0
HANDOVER_EXIT_TIMEOUT_S = 30.0


def _hand_over_from_running_daemon(socket_path: Path, out: Output) -> None:
    """Ask a daemon already serving ``socket_path`` to exit, leaving its workers running for the
    service's daemon to reattach, and wait until it is gone."""
    try:
        info = _daemon_call(socket_path, "daemon.info", None)
    except (FileNotFoundError, ConnectionRefusedError):
        return  # nothing serves the socket
    except (OSError, ValueError) as exc:
        raise ServiceError(f"something answers on {socket_path} but not as an iii daemon "
                           f"({exc}); stop it and retry") from exc
    pid = info.get("pid")
    if not isinstance(pid, int):
        raise ServiceError(f"the daemon on {socket_path} did not report its pid; "
                           "stop it with `iii daemon stop` and retry")
    try:
        _daemon_call(socket_path, "daemon.shutdown", {"stop_workers": False})
    except (OSError, ValueError) as exc:
        raise ServiceError(f"could not ask the running daemon (pid {pid}) to exit ({exc}); "
                           "stop it with `iii daemon stop` and retry") from exc
    deadline = time.monotonic() + HANDOVER_EXIT_TIMEOUT_S
    while _alive(pid):
        if time.monotonic() > deadline:
            raise ServiceError(f"the running daemon (pid {pid}) did not exit within "
                               f"{HANDOVER_EXIT_TIMEOUT_S:.0f}s; stop it with `iii daemon stop`")
        time.sleep(0.05)
    out(f"stopped the daemon that was running (pid {pid}); its workers keep running for the "
        "service's daemon to take over")


def _daemon_call(socket_path: Path, method: str, params: dict[str, object] | None
                 ) -> dict[str, object]:
    """One JSON-RPC request on a fresh connection (the protocol of SPEC §11, no autostart)."""
    request: dict[str, object] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        request["params"] = params
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(HANDOVER_RPC_TIMEOUT_S)
        sock.connect(str(socket_path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        line = sock.makefile("rb").readline()
    reply = json.loads(line) if line else None
    if not isinstance(reply, dict) or not isinstance(reply.get("result"), dict):
        raise ValueError(f"unexpected answer to {method}: {line[:200]!r}")  # noqa: TRY004
    result: dict[str, object] = reply["result"]
    return result


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; an exited daemon its parent has not reaped yet counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (macOS): kill(0) is all we know
    return stat_line.rpartition(")")[2].split()[0] != "Z"


def _require_tools(commands: list[Command]) -> None:
    for tool in dict.fromkeys(cmd.argv[0] for cmd in commands):
        if shutil.which(tool) is None:
            hint = ("a systemd user session" if tool == "systemctl" else "macOS launchd")
            raise ServiceError(f"{tool} not found on PATH: `iii service` needs {hint} "
                               "(--dry-run prints the files and commands instead)")


def _execute(cmd: Command) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd.argv, capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise ServiceError(f"could not run `{shlex.join(cmd.argv)}`: {exc.strerror}") from exc


def _run(cmd: Command, out: Output) -> None:
    done = _execute(cmd)
    if done.returncode != 0 and not cmd.may_fail:
        raise _failure(cmd, done)
    note = "" if done.returncode == 0 else f" (exit {done.returncode}, ignored: not loaded)"
    out(f"ran {shlex.join(cmd.argv)}{note}")


def _failure(cmd: Command, done: subprocess.CompletedProcess[str]) -> ServiceError:
    said = (done.stderr.strip() or done.stdout.strip()).splitlines()
    detail = f": {said[-1]}" if said else ""
    if cmd.argv[0] == "systemctl" and "Failed to connect to bus" in done.stderr:
        detail += (" (no systemd user manager for this session: log in graphically or over ssh, "
                   "or run `loginctl enable-linger $USER`)")
    return ServiceError(f"`{shlex.join(cmd.argv)}` failed with exit code "
                        f"{done.returncode}{detail}")


def _write_atomic(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
