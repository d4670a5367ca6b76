"""The service definitions `iii service install` writes (SPEC §13), as templates and renderers.

The templates live here, not only in ``systemd/`` and ``launchd/``, so an installed (non-editable)
``iii`` can still write them; ``tests/test_units.py`` checks the repository copies match exactly.
Placeholders: ``@III@`` is this installation's ``iii`` command; ``@III_HOME@`` the daemon's home.
"""

from __future__ import annotations

import plistlib
import re
from pathlib import Path
from typing import Any

SERVICE_NAME = "iii-daemon.service"
SOCKET_NAME = "iii-daemon.socket"
LAUNCHD_LABEL = "dev.iii.daemon"
PLIST_NAME = f"{LAUNCHD_LABEL}.plist"
PLACEHOLDER_COMMAND = "@III@"
PLACEHOLDER_HOME = "@III_HOME@"
DEFAULT_LISTEN_STREAM = "%h/.iii/iii.sock"

SERVICE_TEMPLATE = f"""\
# The iii sandbox workers daemon as a systemd user service.
# `iii service install` writes it to ~/.config/systemd/user/, with ExecStart= naming that
# installation's `iii`; the daemon starts at login or on the first connection to its socket.
[Unit]
Description=iii sandbox workers daemon
Requires={SOCKET_NAME}
After={SOCKET_NAME}

[Service]
# The daemon sends READY=1 to $NOTIFY_SOCKET itself once its socket accepts connections.
Type=notify
NotifyAccess=main
ExecStart={PLACEHOLDER_COMMAND} daemon run
# Stop or restart only the daemon: sandboxed workers keep running and the next daemon reattaches
# them. A requested stop (SIGTERM) still stops them gracefully; the daemon does that itself.
KillMode=process
# Our own cgroup subtree: the daemon moves itself into <service cgroup>/daemon and puts each
# sandbox in a sibling leaf with memory.max, cpu.max and pids.max (the manifest's resources).
Delegate=yes
Restart=on-failure
RestartSec=2
StandardOutput=journal
StandardError=journal
SyslogIdentifier=iii-daemon

[Install]
WantedBy=default.target
Also={SOCKET_NAME}
"""

SOCKET_TEMPLATE = f"""\
# The daemon's socket, bound by systemd so clients can connect before (and while) the daemon
# starts; the daemon takes it over through LISTEN_FDS/LISTEN_PID.
[Unit]
Description=iii sandbox workers daemon socket

[Socket]
ListenStream={DEFAULT_LISTEN_STREAM}
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""

# launchd starts jobs with PATH=/usr/bin:/bin:/usr/sbin:/sbin; the daemon and its workers' tools
# also live in Homebrew's prefixes.
LAUNCHD_PATH = "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


def plist_template(command: list[str] | None = None, home: str = PLACEHOLDER_HOME,
                   environment: dict[str, str] | None = None) -> dict[str, Any]:
    """The LaunchAgent as a dict; with no arguments, the placeholder form kept in ``launchd/``."""
    env = {"PATH": LAUNCHD_PATH, "III_HOME": home}
    env.update(environment or {})
    return {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": [*(command or [PLACEHOLDER_COMMAND]), "daemon", "run"],
        "RunAtLoad": True,
        # Restart after a crash, but let `iii daemon stop` (exit 0) really stop it, like
        # systemd's Restart=on-failure.
        "KeepAlive": {"SuccessfulExit": False},
        # launchd kills the job's whole process group when it exits; workers must survive a
        # daemon restart (systemd's KillMode=process).
        "AbandonProcessGroup": True,
        # launchd does not expand ~: these are absolute paths under $III_HOME.
        "StandardOutPath": f"{home}/daemon.log",
        "StandardErrorPath": f"{home}/daemon.log",
        "EnvironmentVariables": env,
    }


def render_plist(command: list[str], home: Path, environment: dict[str, str]) -> str:
    return plistlib.dumps(plist_template(command, str(home), environment)).decode("utf-8")


# Characters that need no quoting in a systemd command line (no specifiers, no variables).
_PLAIN_ARG = re.compile(r"[A-Za-z0-9_./:+,=@-]+")
# systemd refuses these in the executable's path outright (string_is_safe() in config_parse_exec).
_UNSAFE_IN_EXECUTABLE = set("\"'\\\x7f")


def quote_exec_arg(arg: str, *, executable: bool = False) -> str:
    """Quote one ExecStart= word for systemd: specifiers (``%``) doubled, whitespace kept inside
    double quotes. Arguments also get ``$`` doubled and C-style escapes; the executable gets no
    variable expansion and may not contain quotes or backslashes at all (ValueError)."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in arg):
        raise ValueError(f"control character in {arg!r}: cannot be put in a systemd unit")
    if executable and _UNSAFE_IN_EXECUTABLE & set(arg):
        raise ValueError(f"systemd cannot run a program whose path contains quotes or "
                         f"backslashes: {arg!r}; install iii under another directory")
    if _PLAIN_ARG.fullmatch(arg):
        return arg
    if executable:
        return '"' + arg.replace("%", "%%") + '"'
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


def quote_environment(name: str, value: str) -> str:
    """One ``Environment=`` assignment; values are not $-expanded there, only %-specifiers."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError(f"control character in {name}={value!r}: cannot be put in a systemd unit")
    escaped = f"{name}={value}".replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'Environment="{escaped}"'


def render_service(command: list[str], environment: dict[str, str]) -> str:
    exec_line = f"ExecStart={PLACEHOLDER_COMMAND} daemon run\n"
    lines = [quote_environment(k, v) + "\n" for k, v in environment.items()]
    rendered = " ".join(quote_exec_arg(arg, executable=i == 0) for i, arg in enumerate(command))
    return SERVICE_TEMPLATE.replace(
        exec_line, "".join(lines) + exec_line.replace(PLACEHOLDER_COMMAND, rendered))


def render_socket(socket_path: str | None) -> str:
    """The socket unit; ``socket_path`` None means the default ``%h/.iii/iii.sock``."""
    if socket_path is None:
        return SOCKET_TEMPLATE
    if any(ord(ch) < 32 for ch in socket_path):
        raise ValueError(f"control character in socket path {socket_path!r}")
    return SOCKET_TEMPLATE.replace(f"ListenStream={DEFAULT_LISTEN_STREAM}",
                                   "ListenStream=" + socket_path.replace("%", "%%"))
