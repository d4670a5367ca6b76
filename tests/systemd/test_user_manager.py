"""The service units under a REAL systemd user manager: `iii service install` → socket activation →
Type=notify readiness → restart on failure → `iii service uninstall`.

A private ``systemd --user`` runs with its own HOME, XDG_RUNTIME_DIR and XDG_CONFIG_HOME under
/tmp, in a private mount namespace where a tmpfs on /run/systemd holds the ``system`` directory
systemd checks for (this machine did not boot with systemd); nothing outside that namespace
changes. The real ``systemctl --user`` talks to it over its private socket. Needs root (mount,
unshare); skipped with the reason when the manager cannot run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.wait import socket_answers, wait_until

SYSTEMD = next((p for p in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
                if os.access(p, os.X_OK)), None)
MANAGER_START_TIMEOUT_S = 30
UNIT_TIMEOUT_S = 60

pytestmark = [
    pytest.mark.skipif(SYSTEMD is None or shutil.which("systemctl") is None
                       or shutil.which("unshare") is None,
                       reason="systemd, systemctl or unshare not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace needs root"),
]

# Runs as the manager's own process (unshare and sh exec in place): fake "booted with systemd"
# inside this mount namespace only, then become the user manager.
MANAGER_SCRIPT = """
run=/run; [ -d /run/systemd ] && run=/run/systemd
mount -t tmpfs iii-test "$run" && mkdir -p /run/systemd/system || exit 1
exec "$0" --user --unit=iii-test.target
"""


@dataclass
class UserManager:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    home: Path
    config: Path
    log: Path

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["systemctl", "--user", *args], env=self.env, text=True,
                              capture_output=True, timeout=UNIT_TIMEOUT_S, check=False)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        done = self.systemctl("show", unit, *(f"--property={p}" for p in props))
        assert done.returncode == 0, done.stderr
        return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)

    def iii_service(self, *args: str) -> subprocess.CompletedProcess[str]:
        iii = Path(sys.executable).parent / "iii"
        return subprocess.run([str(iii), "service", *args], env=self.env, text=True,
                              capture_output=True, timeout=UNIT_TIMEOUT_S, check=False)


@pytest.fixture
def user_manager() -> Iterator[UserManager]:
    assert SYSTEMD is not None
    base = Path(tempfile.mkdtemp(prefix="iii-sdu-", dir="/tmp"))
    home, runtime, config = base / "home", base / "rt", base / "cfg"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    (runtime / "systemd/user").mkdir(parents=True)
    # The manager's start-up target: nothing from the host's user units gets started.
    (runtime / "systemd/user/iii-test.target").write_text("[Unit]\nDescription=iii tests\n")
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(home),
           "XDG_RUNTIME_DIR": str(runtime), "XDG_CONFIG_HOME": str(config)}
    log = base / "manager.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", MANAGER_SCRIPT,
             SYSTEMD], env=dict(env, SYSTEMD_LOG_TARGET="console"), stdout=log_file,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    manager = UserManager(proc, env, home, config, log)
    try:
        with contextlib.suppress(TimeoutError):  # judged just below, with the log
            wait_until(lambda: proc.poll() is not None or (runtime / "systemd/private").exists(),
                       MANAGER_START_TIMEOUT_S, "the user manager's private socket")
        if proc.poll() is not None or not (runtime / "systemd/private").exists():
            pytest.skip("a private systemd user manager cannot run here: "
                        + log.read_text(errors="replace").strip()[-300:])
        yield manager
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the manager stops its units, then exits
            try:
                proc.wait(UNIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Shown by pytest only when the test failed: what the manager and the daemon said.
        for name, path in (("user manager", log), ("daemon", home / ".iii/daemon.log")):
            if path.exists():
                print(f"--- {name} log, tail ---\n"
                      + "\n".join(path.read_text(errors="replace").splitlines()[-60:]))
        shutil.rmtree(base, ignore_errors=True)


def daemon_info(sock_path: Path) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(UNIT_TIMEOUT_S)
        client.connect(str(sock_path))
        client.sendall(b'{"jsonrpc":"2.0","id":1,"method":"daemon.info"}\n')
        reply = json.loads(client.makefile("rb").readline())
    result: dict[str, object] = reply["result"]
    return result


def test_install_activate_restart_uninstall(user_manager: UserManager) -> None:
    m = user_manager
    unit_dir = m.config / "systemd/user"
    sock_path = m.home / ".iii/iii.sock"

    # A daemon started by hand (or autostarted by the CLI) is already serving the socket.
    by_hand = subprocess.Popen([sys.executable, "-m", "daemon", "run"],
                               env=dict(m.env, III_URL="ws://127.0.0.1:9"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: socket_answers(sock_path), UNIT_TIMEOUT_S, "the hand-started daemon")
        done = m.iii_service("install")
        assert done.returncode == 0, done.stderr
        assert by_hand.wait(UNIT_TIMEOUT_S) == 0  # handed over, exited cleanly
    finally:
        if by_hand.poll() is None:
            by_hand.kill()
            by_hand.wait()
    assert f"stopped the daemon that was running (pid {by_hand.pid})" in done.stdout
    assert "ran systemctl --user enable --now iii-daemon.socket iii-daemon.service" in done.stdout
    assert {p.name for p in unit_dir.iterdir()} >= {"iii-daemon.service", "iii-daemon.socket"}

    # Type=notify: `enable --now` returns once the daemon said READY=1 (else "activating").
    service = m.show("iii-daemon.service", "ActiveState", "SubState", "MainPID", "Type",
                     "NotifyAccess", "KillMode", "Restart")
    assert {k: service[k] for k in ("ActiveState", "SubState", "Type", "NotifyAccess",
                                    "KillMode", "Restart")} == {
        "ActiveState": "active", "SubState": "running", "Type": "notify",
        "NotifyAccess": "main", "KillMode": "process", "Restart": "on-failure"}
    socket_unit = m.show("iii-daemon.socket", "ActiveState", "Listen")
    assert socket_unit == {"ActiveState": "active", "Listen": f"{sock_path} (Stream)"}
    assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock_path.parent.stat().st_mode) == 0o700

    # The daemon serves on the socket systemd bound and handed over (LISTEN_FDS).
    main_pid = int(service["MainPID"])
    assert daemon_info(sock_path)["pid"] == main_pid
    environ = Path(f"/proc/{main_pid}/environ").read_bytes().split(b"\0")
    assert b"LISTEN_FDS=1" in environ and b"NOTIFY_SOCKET=" in b"\n".join(environ)

    status = m.iii_service("status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.rstrip().endswith("service: running")

    # A crash: Restart=on-failure brings a new daemon up on the same socket.
    os.kill(main_pid, signal.SIGKILL)
    wait_until(lambda: m.show("iii-daemon.service", "NRestarts", "ActiveState")
               == {"NRestarts": "1", "ActiveState": "active"}, UNIT_TIMEOUT_S,
               "the daemon restarted by systemd")
    new_pid = int(m.show("iii-daemon.service", "MainPID")["MainPID"])
    assert new_pid != main_pid
    assert daemon_info(sock_path)["pid"] == new_pid

    done = m.iii_service("uninstall")
    assert done.returncode == 0, done.stderr
    assert m.show("iii-daemon.service", "ActiveState")["ActiveState"] == "inactive"
    assert m.show("iii-daemon.socket", "ActiveState")["ActiveState"] == "inactive"
    assert not (unit_dir / "iii-daemon.service").exists()
    assert not (unit_dir / "iii-daemon.socket").exists()
    assert not sock_path.exists()  # RemoveOnStop=yes
    wait_until(lambda: not Path(f"/proc/{new_pid}").exists(), UNIT_TIMEOUT_S,
               "the daemon to exit")
