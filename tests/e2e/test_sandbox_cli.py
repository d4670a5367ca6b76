"""``iii sandbox`` against the real daemon: run, create, exec (own stdio and a pty), cp both
ways, ls, stop, all with --json where it applies."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_sandboxes import sandbox_dirs, sandbox_yaml
from tests.support.daemon import III_CLI, DaemonProcess
from tests.support.wait import wait_until


@pytest.fixture
def daemon(daemon_factory, iii_home: Path, python_image: str,
           busybox_image: str) -> DaemonProcess:
    (iii_home / "daemon.yaml").write_text(sandbox_yaml(python_image, busybox_image))
    return daemon_factory()


def test_run_create_exec_cp_ls_stop(daemon: DaemonProcess, iii_home: Path,
                                    tmp_path: Path) -> None:
    ran = daemon.iii("sandbox", "run", "python", "-c", "import sys; print(2+2); sys.exit(3)")
    assert (ran.returncode, ran.stdout) == (3, "4\n"), ran.stderr
    script = tmp_path / "hello.sh"
    script.write_text("echo hello from $0\n")
    as_json = json.loads(daemon.iii("sandbox", "run", "shell", str(script), "--json").stdout)
    assert as_json["stdout"] == "hello from /tmp/run.sh\n" and as_json["success"] is True
    assert daemon.iii("sandbox", "run", "python").returncode == 1  # neither -c nor FILE

    sid = daemon.iii("sandbox", "create", "shell", "--name", "cli").stdout.strip()
    listed = daemon.json("sandbox", "ls")["sandboxes"]
    assert [(s["sandbox_id"], s["name"]) for s in listed] == [(sid, "cli")]
    assert sid in daemon.iii("sandbox", "ls").stdout

    local = tmp_path / "data.bin"
    local.write_bytes(b"\x00\x01binary\xff")
    local.chmod(0o640)
    assert daemon.iii("sandbox", "cp", str(local), f"{sid}:/in/data.bin").returncode == 0
    done = daemon.iii("sandbox", "exec", sid, "--", "sh", "-c", "wc -c < /in/data.bin; exit 5")
    assert (done.returncode, done.stdout.strip()) == (5, "9")
    captured = json.loads(daemon.iii("sandbox", "exec", sid, "--json", "--", "stat", "-c", "%a",
                                     "/in/data.bin").stdout)
    assert captured["stdout"] == "640\n"
    back = tmp_path / "back.bin"
    assert daemon.iii("sandbox", "cp", f"{sid}:/in/data.bin", str(back)).returncode == 0
    assert back.read_bytes() == local.read_bytes()
    both = daemon.iii("sandbox", "cp", str(local), str(back))
    assert both.returncode == 1 and "exactly one side" in both.stderr

    assert daemon.json("sandbox", "stop", sid) == {"sandbox_id": sid, "stopped": True}
    assert sandbox_dirs(iii_home) == []
    gone = daemon.iii("sandbox", "exec", sid, "--", "true")
    assert gone.returncode == 1 and "sandbox not found" in gone.stderr


def test_exec_on_a_terminal_gets_a_pty(daemon: DaemonProcess) -> None:
    sid = daemon.iii("sandbox", "create", "shell").stdout.strip()
    master, slave = pty.openpty()
    proc = subprocess.Popen([III_CLI, "sandbox", "exec", sid, "--", "sh", "-c",
                             "[ -t 0 ] && echo on-a-tty; read line; echo got $line"],
                            stdin=slave, stdout=slave, stderr=slave, env=daemon.env,
                            start_new_session=True)
    os.close(slave)
    out = bytearray()

    def saw(text: bytes) -> bool:
        try:
            out.extend(os.read(master, 4096))
        except OSError:
            pass
        return text in out
    try:
        wait_until(lambda: saw(b"on-a-tty"), 30, "the command on a tty")
        os.write(master, b"typed\r")
        wait_until(lambda: saw(b"got typed"), 30, "the typed line")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(master)
