"""The systemd units and the LaunchAgent (SPEC §13): in sync with the installer's templates,
accepted by the real ``systemd-analyze verify --user``; a well-formed plist with launchd's keys."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from client import service_units as units

REPO = Path(__file__).resolve().parent.parent
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (Makefile apt installs systemd)")

# Keys documented in launchd.plist(5); a misspelt key is silently ignored by launchd.
LAUNCHD_KEYS = {
    "Label", "Disabled", "UserName", "GroupName", "inetdCompatibility", "LimitLoadToHosts",
    "LimitLoadFromHosts", "LimitLoadToSessionType", "LimitLoadToHardware",
    "LimitLoadFromHardware", "Program", "ProgramArguments", "EnableGlobbing",
    "EnableTransactions", "EnablePressuredExit", "OnDemand", "SessionCreate", "ServiceIPC",
    "KeepAlive", "RunAtLoad", "RootDirectory", "WorkingDirectory", "EnvironmentVariables",
    "Umask", "TimeOut", "ExitTimeOut", "ThrottleInterval", "InitGroups", "WatchPaths",
    "QueueDirectories", "StartOnMount", "StartInterval", "StartCalendarInterval",
    "StandardInPath", "StandardOutPath", "StandardErrorPath", "Debug", "WaitForDebugger",
    "SoftResourceLimits", "HardResourceLimits", "Nice", "ProcessType", "AbandonProcessGroup",
    "LowPriorityIO", "LowPriorityBackgroundIO", "MaterializeDatalessFiles", "LaunchOnlyOnce",
    "MachServices", "Sockets", "AssociatedBundleIdentifiers",
}
KEEPALIVE_KEYS = {"SuccessfulExit", "NetworkState", "PathState", "OtherJobEnabled", "Crashed",
                  "AfterInitialDemand"}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's unit syntax: [Section] then Key=Value lines (keys may repeat); # comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def the(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, f"{section}.{key} given {len(values)} times"
    return values[0]


def test_repository_units_are_the_installer_templates() -> None:
    assert (REPO / "systemd/iii-daemon.service").read_text() == units.SERVICE_TEMPLATE
    assert (REPO / "systemd/iii-daemon.socket").read_text() == units.SOCKET_TEMPLATE
    assert (plistlib.loads((REPO / "launchd/dev.iii.daemon.plist").read_bytes())
            == units.plist_template())


def test_service_unit_keys() -> None:
    unit = parse_unit((REPO / "systemd/iii-daemon.service").read_text())
    expected = {
        "Type": "notify", "NotifyAccess": "main", "ExecStart": "@III@ daemon run",
        "KillMode": "process", "Restart": "on-failure", "StandardError": "journal",
        "Delegate": "yes",
    }
    assert {k: the(unit, "Service", k) for k in expected} == expected
    assert the(unit, "Unit", "Requires") == "iii-daemon.socket"
    assert the(unit, "Unit", "After") == "iii-daemon.socket"
    assert the(unit, "Install", "WantedBy") == "default.target"


def test_socket_unit_keys() -> None:
    unit = parse_unit((REPO / "systemd/iii-daemon.socket").read_text())
    expected = {"ListenStream": "%h/.iii/iii.sock", "SocketMode": "0600",
                "DirectoryMode": "0700"}
    assert {k: the(unit, "Socket", k) for k in expected} == expected
    assert "Accept" not in unit["Socket"]  # one daemon takes the listening socket itself
    assert the(unit, "Install", "WantedBy") == "sockets.target"


def verify(unit_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the real ``systemd-analyze verify --user`` on the two units in ``unit_dir``.

    It builds a user manager in-process, which only needs a private runtime directory; it checks
    every key and value and that ExecStart='s program exists and is executable.
    """
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), HOME=str(tmp_path),
               SYSTEMD_LOG_LEVEL="notice")
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--user", "--man=no",
         str(unit_dir / units.SERVICE_NAME), str(unit_dir / units.SOCKET_NAME)],
        capture_output=True, text=True, env=env, timeout=120, check=False)


def write_units(unit_dir: Path, command: list[str], environment: dict[str, str] | None = None,
                socket_path: str | None = None) -> None:
    unit_dir.mkdir(parents=True, exist_ok=True)
    (unit_dir / units.SERVICE_NAME).write_text(units.render_service(command, environment or {}))
    (unit_dir / units.SOCKET_NAME).write_text(units.render_socket(socket_path))


@needs_systemd_analyze
@pytest.mark.parametrize("form", ["console-script", "interpreter"])
def test_rendered_units_pass_systemd_analyze_verify(form: str, tmp_path: Path) -> None:
    iii = Path(sys.executable).parent / "iii"  # the venv's console script
    assert iii.is_file()
    command = [str(iii)] if form == "console-script" else [sys.executable, "-m", "client.cli"]
    write_units(tmp_path / "units", command)
    done = verify(tmp_path / "units", tmp_path)
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "")


@needs_systemd_analyze
def test_verify_passes_with_awkward_paths_quoted(tmp_path: Path) -> None:
    """Spaces, % and $ in the install path and home survive systemd's unquoting: verify finds the
    executable only if ExecStart= was quoted right."""
    venv_bin = tmp_path / "my venv 100% $HOME" / "bin"
    venv_bin.mkdir(parents=True)
    iii = venv_bin / "iii"
    iii.write_text("#!/bin/sh\nexit 0\n")
    iii.chmod(0o755)
    write_units(tmp_path / "units", [str(iii)], {"III_HOME": str(tmp_path / "home 50%")},
                socket_path=str(tmp_path / "s%h.sock"))
    done = verify(tmp_path / "units", tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert "%%" in (tmp_path / "units" / units.SOCKET_NAME).read_text()


@needs_systemd_analyze
def test_verify_really_checks_the_units(tmp_path: Path) -> None:
    """The check above can fail: a missing program and a misspelt key are both reported."""
    write_units(tmp_path / "units", ["/nonexistent/bin/iii"])
    service = tmp_path / "units" / units.SERVICE_NAME
    service.write_text(service.read_text().replace("KillMode=", "KilMode="))
    done = verify(tmp_path / "units", tmp_path)
    assert done.returncode != 0
    assert "Command /nonexistent/bin/iii is not executable" in done.stderr
    assert "Unknown key 'KilMode' in section [Service]" in done.stderr


def test_plist_is_well_formed_with_launchd_keys() -> None:
    plist = plistlib.loads((REPO / "launchd/dev.iii.daemon.plist").read_bytes())
    assert set(plist) <= LAUNCHD_KEYS
    assert plist["Label"] == "dev.iii.daemon"
    assert plist["ProgramArguments"] == ["@III@", "daemon", "run"]
    assert plist["RunAtLoad"] is True
    assert set(plist["KeepAlive"]) <= KEEPALIVE_KEYS and plist["KeepAlive"]
    assert plist["AbandonProcessGroup"] is True  # workers survive a daemon restart
    assert plist["StandardOutPath"] == "@III_HOME@/daemon.log"
    assert plist["StandardErrorPath"] == "@III_HOME@/daemon.log"
    assert all(isinstance(v, str) for v in plist["EnvironmentVariables"].values())


def test_rendered_plist_has_absolute_paths(tmp_path: Path) -> None:
    home = tmp_path / "Users/ann/.iii"
    text = units.render_plist(["/opt/iii/bin/iii"], home, {"III_SOCKET": "/tmp/x.sock"})
    plist = plistlib.loads(text.encode())
    assert plist["ProgramArguments"] == ["/opt/iii/bin/iii", "daemon", "run"]
    assert plist["StandardErrorPath"] == f"{home}/daemon.log"
    assert plist["EnvironmentVariables"]["III_HOME"] == str(home)
    assert plist["EnvironmentVariables"]["III_SOCKET"] == "/tmp/x.sock"
    assert "@III" not in text


@pytest.mark.parametrize(
    ("arg", "executable", "quoted"),
    [("/usr/bin/iii", True, "/usr/bin/iii"), ("/a b/iii", True, '"/a b/iii"'),
     ("/a%b", True, '"/a%%b"'), ("/$HOME/x", True, '"/$HOME/x"'), ("-m", False, "-m"),
     ("a b", False, '"a b"'), ("$HOME", False, '"$$HOME"'), ("50%", False, '"50%%"'),
     ('q"x', False, '"q\\"x"'), ("b\\s", False, '"b\\\\s"')],
    ids=["plain", "space", "percent", "dollar-in-program", "arg-plain", "arg-space",
         "arg-dollar", "arg-percent", "arg-quote", "arg-backslash"],
)
def test_quote_exec_arg(arg: str, executable: bool, quoted: str) -> None:
    assert units.quote_exec_arg(arg, executable=executable) == quoted


@pytest.mark.parametrize("program", ["/a\nb/iii", '/a"b/iii', "/a'b/iii", "/a\\b/iii"],
                         ids=["newline", "double-quote", "single-quote", "backslash"])
def test_programs_systemd_cannot_run_are_refused(program: str) -> None:
    with pytest.raises(ValueError, match=r"control character|quotes or backslashes"):
        units.render_service([program], {})
