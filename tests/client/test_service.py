"""`iii service install | uninstall | status`, run as a real command against stand-ins for the
host's service managers.

``systemctl`` and ``launchctl`` here are RECORD-AND-SUCCEED STAND-INS (shell scripts put first on
PATH): the real ones would change the services of the machine running the tests. They append
their arguments to a record file and answer like the real tools (exit codes, a status text), and
can be told to fail. Everything else is real: files written under a temporary HOME, the CLI run
as a subprocess.
"""

from __future__ import annotations

import os
import plistlib
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client import service
from client.errors import ServiceError
from client.service import ServicePlatform
from tests.support.wait import socket_answers, wait_until

VENV_III = str(Path(sys.executable).absolute().parent / "iii")

STAND_IN = """#!/bin/sh
# TEST STAND-IN for the host's {tool}: records its arguments, then succeeds (or fails on request).
# Never the real {tool}: that would change the services of the machine running the tests.
{{ printf '%s' {tool}; for a in "$@"; do printf '\\t%s' "$a"; done; printf '\\n'; }} \\
    >> "$III_TEST_RECORD"
case " $* " in
  *" $III_TEST_FAIL_ON "*)
    echo "${{III_TEST_FAIL_MESSAGE:-Failed: stand-in {tool} told to fail on $III_TEST_FAIL_ON}}" >&2
    exit 1 ;;
esac
case " $* " in
  *" status "*|*" print "*) echo "stand-in {tool}: dev.iii.daemon / iii-daemon.service"
                           exit "${{III_TEST_STATUS_RC:-0}}" ;;
esac
exit 0
"""


@dataclass
class ServiceHost:
    home: Path
    bin: Path
    record: Path
    env: dict[str, str]

    def run(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        env = dict(self.env, **extra_env)
        return subprocess.run([sys.executable, "-m", "client.cli", "service", *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    def recorded(self) -> list[list[str]]:
        if not self.record.exists():
            return []
        return [line.split("\t") for line in self.record.read_text().splitlines()]

    @property
    def unit_dir(self) -> Path:
        return self.home / ".config/systemd/user"

    @property
    def plist(self) -> Path:
        return self.home / "Library/LaunchAgents/dev.iii.daemon.plist"


@pytest.fixture
def host() -> Iterator[ServiceHost]:
    with tempfile.TemporaryDirectory(prefix="iii-svc-", dir="/tmp") as tmp:
        yield make_host(Path(tmp))  # short: the daemon's socket lives under this HOME


def make_host(tmp_path: Path) -> ServiceHost:
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("systemctl", "launchctl"):
        script = bin_dir / tool
        script.write_text(STAND_IN.format(tool=tool))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items()
           if k not in ("III_HOME", "III_SOCKET", "XDG_CONFIG_HOME", "III_TEST_FAIL_ON")}
    env.update(HOME=str(home), PATH=f"{bin_dir}:{os.environ['PATH']}",
               III_TEST_RECORD=str(tmp_path / "record.tsv"))
    return ServiceHost(home, bin_dir, tmp_path / "record.tsv", env)


def test_systemd_install_writes_units_and_enables_them(host: ServiceHost) -> None:
    done = host.run("install", "--platform", "systemd")
    assert done.returncode == 0, done.stderr
    service_unit = (host.unit_dir / "iii-daemon.service").read_text()
    socket_unit = (host.unit_dir / "iii-daemon.socket").read_text()
    assert f"\nExecStart={VENV_III} daemon run\n" in service_unit
    assert "\nType=notify\n" in service_unit and "\nKillMode=process\n" in service_unit
    assert "Environment=" not in service_unit  # default home: nothing to override
    assert "\nListenStream=%h/.iii/iii.sock\n" in socket_unit
    assert host.recorded() == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "iii-daemon.socket", "iii-daemon.service"],
    ]
    assert done.stdout.splitlines()[:4] == [
        f"wrote {host.unit_dir}/iii-daemon.service",
        f"wrote {host.unit_dir}/iii-daemon.socket",
        "ran systemctl --user daemon-reload",
        "ran systemctl --user enable --now iii-daemon.socket iii-daemon.service",
    ]
    assert sorted(p.name for p in host.unit_dir.iterdir()) == [
        "iii-daemon.service", "iii-daemon.socket"]  # no temp files left behind


def test_systemd_uninstall_reverses_install(host: ServiceHost) -> None:
    assert host.run("install", "--platform", "systemd").returncode == 0
    host.record.unlink()
    done = host.run("uninstall", "--platform", "systemd")
    assert done.returncode == 0, done.stderr
    assert host.recorded() == [
        ["systemctl", "--user", "disable", "--now", "iii-daemon.socket", "iii-daemon.service"],
        ["systemctl", "--user", "daemon-reload"],
    ]
    assert list(host.unit_dir.iterdir()) == []
    assert f"removed {host.unit_dir}/iii-daemon.service" in done.stdout
    again = host.run("uninstall", "--platform", "systemd")
    assert again.returncode == 0 and again.stdout.startswith("not installed: ")


@pytest.mark.parametrize(("manager_rc", "exit_code", "said"),
                         [("0", 0, "service: running"), ("3", 3, "service: not running")],
                         ids=["active", "inactive"])
def test_systemd_status(host: ServiceHost, manager_rc: str, exit_code: int, said: str) -> None:
    assert host.run("install", "--platform", "systemd").returncode == 0
    host.record.unlink()
    done = host.run("status", "--platform", "systemd", III_TEST_STATUS_RC=manager_rc)
    assert done.returncode == exit_code, done.stderr
    assert host.recorded() == [["systemctl", "--user", "--no-pager", "status",
                                "iii-daemon.socket", "iii-daemon.service"]]
    assert f"{host.unit_dir}/iii-daemon.service: installed" in done.stdout
    assert "stand-in systemctl" in done.stdout  # the manager's own report is passed through
    assert done.stdout.rstrip().endswith(said)


def test_dry_run_prints_files_and_commands_and_changes_nothing(host: ServiceHost) -> None:
    done = host.run("install", "--dry-run", "--platform", "systemd")
    assert done.returncode == 0, done.stderr
    assert not (host.home / ".config").exists()
    assert host.recorded() == []
    assert f"would write {host.unit_dir}/iii-daemon.service:" in done.stdout
    assert f"ExecStart={VENV_III} daemon run" in done.stdout
    assert "ListenStream=%h/.iii/iii.sock" in done.stdout
    assert "would run: systemctl --user enable --now iii-daemon.socket iii-daemon.service" \
        in done.stdout


def test_launchd_install_writes_the_agent_and_bootstraps_it(host: ServiceHost) -> None:
    done = host.run("install", "--platform", "launchd")
    assert done.returncode == 0, done.stderr
    plist = plistlib.loads(host.plist.read_bytes())
    iii_home = host.home / ".iii"
    assert plist["Label"] == "dev.iii.daemon"
    assert plist["ProgramArguments"] == [VENV_III, "daemon", "run"]
    assert plist["StandardErrorPath"] == f"{iii_home}/daemon.log"
    assert plist["EnvironmentVariables"]["III_HOME"] == str(iii_home)
    assert stat.S_IMODE(iii_home.stat().st_mode) == 0o700  # launchd opens the log there
    uid = os.getuid()
    assert host.recorded() == [
        ["launchctl", "bootout", f"gui/{uid}/dev.iii.daemon"],
        ["launchctl", "bootstrap", f"gui/{uid}", str(host.plist)],
    ]
    assert f"wrote {host.plist}" in done.stdout
    assert f"ran launchctl bootstrap gui/{uid} {host.plist}" in done.stdout


def test_launchd_uninstall_tolerates_a_job_that_is_not_loaded(host: ServiceHost) -> None:
    assert host.run("install", "--platform", "launchd").returncode == 0
    host.record.unlink()
    done = host.run("uninstall", "--platform", "launchd", III_TEST_FAIL_ON="bootout")
    assert done.returncode == 0, done.stderr
    assert host.recorded() == [["launchctl", "bootout", f"gui/{os.getuid()}/dev.iii.daemon"]]
    assert not host.plist.exists()
    assert "(exit 1, ignored: not loaded)" in done.stdout


def test_launchd_status_not_loaded(host: ServiceHost) -> None:
    done = host.run("status", "--platform", "launchd", III_TEST_STATUS_RC="113")
    assert done.returncode == 3, done.stderr
    assert host.recorded() == [["launchctl", "print", f"gui/{os.getuid()}/dev.iii.daemon"]]
    assert f"{host.plist}: not installed" in done.stdout


def test_missing_systemctl_is_one_line_error(host: ServiceHost) -> None:
    (host.bin / "systemctl").unlink()
    done = host.run("install", "--platform", "systemd", PATH=str(host.bin))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: systemctl not found on PATH: `iii service` needs a "
                                  "systemd user session")
    assert not host.unit_dir.exists()  # checked before anything is written


def test_failing_systemctl_is_one_line_error(host: ServiceHost) -> None:
    done = host.run("install", "--platform", "systemd", III_TEST_FAIL_ON="enable")
    assert done.returncode == 1
    assert done.stderr == (
        "error: `systemctl --user enable --now iii-daemon.socket iii-daemon.service` failed "
        "with exit code 1: Failed: stand-in systemctl told to fail on enable\n")
    assert "ran systemctl --user daemon-reload" in done.stdout


def test_no_user_manager_gets_a_hint(host: ServiceHost) -> None:
    done = host.run("install", "--platform", "systemd", III_TEST_FAIL_ON="daemon-reload",
                    III_TEST_FAIL_MESSAGE="Failed to connect to bus: No medium found")
    assert done.returncode == 1
    assert done.stderr == (
        "error: `systemctl --user daemon-reload` failed with exit code 1: Failed to connect to "
        "bus: No medium found (no systemd user manager for this session: log in graphically or "
        "over ssh, or run `loginctl enable-linger $USER`)\n")


def test_custom_homes_are_written_into_the_units(host: ServiceHost, tmp_path: Path) -> None:
    iii_home, config = tmp_path / "iii home", tmp_path / "xdg"
    done = host.run("install", "--platform", "systemd", III_HOME=str(iii_home),
                    XDG_CONFIG_HOME=str(config))
    assert done.returncode == 0, done.stderr
    service_unit = (config / "systemd/user/iii-daemon.service").read_text()
    socket_unit = (config / "systemd/user/iii-daemon.socket").read_text()
    assert f'\nEnvironment="III_HOME={iii_home}"\n' in service_unit
    assert f"\nListenStream={iii_home}/iii.sock\n" in socket_unit


def test_usage_error_for_unknown_platform(host: ServiceHost) -> None:
    done = host.run("install", "--platform", "upstart")
    assert done.returncode == 2
    assert host.recorded() == []


@pytest.mark.parametrize(("sys_platform", "expected"),
                         [("linux", ServicePlatform.SYSTEMD), ("darwin", ServicePlatform.LAUNCHD)],
                         ids=["linux", "macos"])
def test_detect_platform(sys_platform: str, expected: ServicePlatform) -> None:
    assert service.detect_platform(sys_platform) is expected


def test_detect_platform_refuses_others() -> None:
    with pytest.raises(ServiceError, match="not 'win32'"):
        service.detect_platform("win32")


def test_iii_command_prefers_the_console_script_beside_the_interpreter(tmp_path: Path) -> None:
    python = tmp_path / "bin" / "python3"
    python.parent.mkdir()
    assert service.iii_command(str(python)) == [str(python), "-m", "client.cli"]
    iii = tmp_path / "bin" / "iii"
    iii.write_text("#!/bin/sh\n")
    iii.chmod(0o755)
    assert service.iii_command(str(python)) == [str(iii)]


def test_unsupported_program_path_is_a_service_error(tmp_path: Path) -> None:
    weird = tmp_path / 'q"uote' / "python3"
    with pytest.raises(ServiceError, match="quotes or backslashes"):
        service.plan_service(ServicePlatform.SYSTEMD, environ={"HOME": str(tmp_path)},
                             executable=str(weird))


def test_install_hands_over_from_a_running_daemon(host: ServiceHost) -> None:
    """A daemon started by hand must not keep running beside the service's: install asks it to
    exit, leaving its workers for the service's daemon to reattach."""
    env = dict(host.env, III_NO_AUTOSTART="1", III_URL="ws://127.0.0.1:9")
    daemon = subprocess.Popen([sys.executable, "-m", "daemon", "run"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: socket_answers(host.home / ".iii/iii.sock"), 60, "the hand-started daemon")
        done = host.run("install", "--platform", "systemd")
        assert done.returncode == 0, done.stderr
        # After daemon-reload proved the service manager answers, before it starts its daemon.
        assert done.stdout.splitlines()[2:5] == [
            "ran systemctl --user daemon-reload",
            (f"stopped the daemon that was running (pid {daemon.pid}); its workers keep running "
             "for the service's daemon to take over"),
            "ran systemctl --user enable --now iii-daemon.socket iii-daemon.service"]
        _out, log = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert daemon.returncode == 0
    assert "shutting down (keeping workers)" in log
    assert [cmd[2] for cmd in host.recorded()] == ["daemon-reload", "enable"]


def test_something_else_on_the_socket_is_refused(host: ServiceHost) -> None:
    path = host.home / ".iii/iii.sock"
    path.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as impostor:
        impostor.bind(str(path))
        impostor.listen(1)

        def answer_like_something_else() -> None:
            conn, _ = impostor.accept()
            with conn:
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

        server = threading.Thread(target=answer_like_something_else)
        server.start()
        done = host.run("install", "--platform", "systemd")
        server.join(timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: something answers on {path} but not as an iii daemon")
    assert host.recorded() == [["systemctl", "--user", "daemon-reload"]]  # nothing enabled


def test_uninstall_dry_run_removes_nothing(host: ServiceHost) -> None:
    assert host.run("install", "--platform", "launchd").returncode == 0
    host.record.unlink()
    done = host.run("uninstall", "--dry-run", "--platform", "launchd")
    assert done.returncode == 0, done.stderr
    assert host.plist.exists()
    assert host.recorded() == []
    assert done.stdout.splitlines() == [
        f"would run: launchctl bootout gui/{os.getuid()}/dev.iii.daemon",
        f"would remove {host.plist}",
    ]
