"""``iii worker exec`` end to end: a real daemon, a real namespace sandbox, the CLI's own stdio
(or a pty it opens) passed to the command over the socket."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.daemon import III_CLI, DaemonProcess
from tests.support.projects import make_shell_project
from tests.support.wait import wait_until


@pytest.fixture
def running(daemon_factory, busybox_image: str, tmp_path: Path) -> DaemonProcess:
    project = make_shell_project(tmp_path, busybox_image, "box",
                                 start="echo ready > /tmp/ready; exec sleep 1000")
    daemon = daemon_factory()
    assert daemon.iii("worker", "add", str(project)).returncode == 0
    assert daemon.json("worker", "start", "box")["status"] == "running"
    return daemon


def test_output_exit_code_env_and_workdir(running: DaemonProcess) -> None:
    done = running.iii("worker", "exec", "box", "-e", "WHO=exec", "-w", "/tmp", "--",
                       "sh", "-c", "echo $WHO in $(pwd) as $(id -u); cat ready; exit 3")
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == ["exec in /tmp as 0", "ready"]
    stdin = subprocess.run([III_CLI, "worker", "exec", "box", "--", "cat"], input="piped\n",
                           env=running.env, capture_output=True, text=True, timeout=60,
                           check=False)
    assert (stdin.returncode, stdin.stdout) == (0, "piped\n")


@pytest.mark.parametrize(("args", "code", "message"), [
    (("box", "--", "no-such-command"), 127, "exec no-such-command"),
    (("nosuch", "--", "true"), 1, "error: "),
    (("box", "-e", "III_URL=x", "--", "true"), 1, "III_URL: reserved"),
], ids=["command-not-found", "unknown-worker", "reserved-env"])
def test_bad_input(running: DaemonProcess, args: tuple[str, ...], code: int,
                   message: str) -> None:
    done = running.iii("worker", "exec", *args)
    assert done.returncode == code and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_stopped_worker_is_a_clear_error(running: DaemonProcess) -> None:
    running.json("worker", "stop", "box")
    done = running.iii("worker", "exec", "box", "--", "true")
    assert done.returncode == 1 and "not running" in done.stderr


def test_timeout_stops_a_command_that_ignores_sigint(running: DaemonProcess) -> None:
    started = time.monotonic()
    done = running.iii("worker", "exec", "--timeout", "1", "box", "--",
                       "sh", "-c", "trap '' INT; sleep 100")
    assert done.returncode == 124, done.stderr
    assert time.monotonic() - started < 20


@dataclass
class PtyExec:
    """``iii worker exec`` run on a pty, as from a terminal; ``out`` keeps what it printed."""

    proc: subprocess.Popen[bytes]
    master: int
    out: bytearray = field(default_factory=bytearray)

    def read_until(self, text: bytes) -> bool:
        """Read what the pty has, keep it in ``out``, say if ``text`` came."""
        try:
            self.out.extend(os.read(self.master, 4096))
        except OSError:
            pass
        return text in self.out


@contextlib.contextmanager
def exec_on_a_pty(running: DaemonProcess, rows: int, cols: int, script: str
                  ) -> Iterator[PtyExec]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen([III_CLI, "worker", "exec", "box", "--", "sh", "-c", script],
                            stdin=slave, stdout=slave, stderr=slave, env=running.env,
                            start_new_session=True)
    os.close(slave)
    try:
        yield PtyExec(proc, master)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        os.close(master)


def test_tty_gets_a_pty_resizes_and_ctrl_c(running: DaemonProcess) -> None:
    script = "[ -t 0 ] && echo on-a-tty; stty size; echo go; sleep 100; echo never"
    with exec_on_a_pty(running, 33, 101, script) as run:
        wait_until(lambda: run.read_until(b"go"), 30, "the command's output")
        assert b"on-a-tty" in run.out and b"33 101" in run.out, bytes(run.out)
        os.write(run.master, b"\x03")  # Ctrl-C, as typed: the pty delivers SIGINT to the command
        assert run.proc.wait(30) == 130
        assert b"never" not in run.out


def test_daemon_killed_during_exec_takes_the_command(running: DaemonProcess) -> None:
    proc = subprocess.Popen([III_CLI, "worker", "exec", "box", "--", "sleep", "4321"],
                            env=running.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(lambda: _sleepers("4321"), 30, "the command to run")
    running.kill9()
    wait_until(lambda: not _sleepers("4321"), 30, "the command to end with the daemon")
    assert proc.wait(30) != 0
    assert proc.stderr is not None
    proc.stderr.close()


def _sleepers(arg: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == f"sleep\0{arg}\0".encode():
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_several_execs_at_once(running: DaemonProcess) -> None:
    procs = [subprocess.Popen([III_CLI, "worker", "exec", "box", "--", "sh", "-c",
                               f"sleep 1; echo run-{i}; exit {i}"], env=running.env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
             for i in range(4)]
    for i, proc in enumerate(procs):
        out, _ = proc.communicate(timeout=60)
        assert (proc.returncode, out) == (i, f"run-{i}\n")


def test_a_resize_reaches_the_command(running: DaemonProcess) -> None:
    script = "trap 'stty size' WINCH; echo armed; while true; do sleep 0.1; done"
    with exec_on_a_pty(running, 20, 70, script) as run:
        wait_until(lambda: run.read_until(b"armed"), 30, "the command to start")
        fcntl.ioctl(run.master, termios.TIOCSWINSZ, struct.pack("HHHH", 44, 132, 0, 0))
        os.killpg(run.proc.pid, signal.SIGWINCH)  # what the terminal does on a resize
        wait_until(lambda: run.read_until(b"44 132"), 30, "the new size inside")


def test_the_command_joins_the_sandboxs_cgroups(running: DaemonProcess) -> None:
    done = running.iii("worker", "exec", "box", "--", "sh", "-c",
                       "cat /proc/self/cgroup; echo --; cat /proc/1/cgroup")
    assert done.returncode == 0, done.stderr
    ours, sandbox_init = done.stdout.split("--\n")
    assert ours == sandbox_init
    if os.geteuid() == 0 and Path("/sys/fs/cgroup/memory").is_dir():  # v1 leaves, as root
        assert any(line.split(":")[1] == "memory" and "box" in line.split(":")[2]
                   for line in ours.splitlines()), ours


def test_a_killed_fork_server_ends_its_execs_and_is_started_again(
        running: DaemonProcess) -> None:
    proc = subprocess.Popen([III_CLI, "worker", "exec", "box", "--", "sleep", "4322"],
                            env=running.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: _sleepers("4322"), 30, "the command to run")
    assert running.proc is not None
    servers = [pid for pid in _children(running.proc.pid)
               if b"vmm_ffi.exec.enter_server" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(servers) == 1
    os.kill(servers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "fork server died" in err, err
    wait_until(lambda: not _sleepers("4322"), 30, "the command to end with its helper")
    again = running.iii("worker", "exec", "box", "--", "echo", "back")
    assert (again.returncode, again.stdout) == (0, "back\n"), again.stderr


def _children(pid: int) -> list[int]:
    found = []
    for child in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(child))
    return found
