"""``vmm_ffi.exec.enter``: a command run inside a running sandbox shares its namespaces and root."""

from __future__ import annotations

import os
import subprocess
import sys

import msgspec
import pytest

from tests.vmm_ffi.conftest import Sandboxes
from vmm_ffi.exec.enter import EnterSpec
from vmm_ffi.launch import launcher_python_path
from vmm_ffi.network.helper import find_pasta, tun_problem
from vmm_ffi.params import IdShift, LaunchResult

ENTER_TIMEOUT_S = 20


def enter(result: LaunchResult, argv: list[str], **spec: object
          ) -> subprocess.CompletedProcess[str]:
    body = msgspec.json.encode(EnterSpec(sandbox_pid=result.sandbox_pid, argv=argv,
                                         env={"PATH": "/bin"}, **spec)).decode()  # type: ignore[arg-type]
    return subprocess.run([sys.executable, "-S", "-m", "vmm_ffi.exec.enter", body],
                          capture_output=True, text=True, timeout=ENTER_TIMEOUT_S, check=False,
                          env={"PYTHONPATH": launcher_python_path()})


@pytest.fixture
def running(sandboxes: Sandboxes) -> LaunchResult:
    extra: dict[str, object] = {}
    if find_pasta() is not None and tun_problem() is None:
        extra.update(network="pasta", pasta=find_pasta())
    if os.geteuid() == 0:
        extra["id_shift"] = IdShift(uid_base=3_200_000, gid_base=3_200_000)
    params = sandboxes.params(["sh", "-c", "echo inside > /tmp/mark; exec sleep 1000"],
                              hostname="exec-box", **extra)
    return sandboxes.spawn(params)


def test_command_sees_the_sandbox(running: LaunchResult) -> None:
    script = ("hostname; id -u; cat /proc/1/comm; readlink /proc/self/ns/net; "
              "while [ ! -f /tmp/mark ]; do sleep 0.05; done; cat /tmp/mark; pwd")
    done = enter(running, ["sh", "-c", script], workdir="/workspace")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "exec-box" and lines[1] == "0"
    assert lines[2] in ("iii-init", "python3")  # the sandbox's PID 1, not the host's
    if find_pasta() is not None and tun_problem() is None:
        assert lines[3] != os.readlink("/proc/self/ns/net")
    assert lines[5] == "/workspace"


def test_exit_codes_pass_through(running: LaunchResult) -> None:
    assert enter(running, ["sh", "-c", "exit 3"]).returncode == 3
    missing = enter(running, ["no-such-command"])
    assert missing.returncode == 127 and "exec no-such-command" in missing.stderr
    killed = enter(running, ["sh", "-c", "kill -9 $$"])
    assert killed.returncode == 137


def test_command_runs_under_the_sandboxs_filter(running: LaunchResult) -> None:
    done = enter(running, ["sh", "-c", "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status"],
                 seccomp=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["NoNewPrivs:", "1", "Seccomp:", "2"]
