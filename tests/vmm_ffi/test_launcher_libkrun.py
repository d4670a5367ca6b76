"""The libkrun backend through the one test double (tests/support/libkrun_double.c).

Proves the cffi declarations, the SPEC §8 call order and arguments, argv/envp marshalling,
console wiring and the launcher's process model. Real VMs: see the ``libkrun``-marked test.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.support.libkrun_double import read_calls
from tests.support.wait import wait_until
from tests.vmm_ffi.conftest import SANDBOX_ENV, Sandboxes
from vmm_ffi.errors import LaunchFailed, VmmError
from vmm_ffi.libkrun.binding import Libkrun, configure

CALL_ORDER = ["krun_set_log_level", "krun_create_ctx", "krun_set_vm_config", "krun_set_root",
              "krun_set_workdir", "krun_set_exec", "krun_set_port_map", "krun_set_rlimits",
              "krun_set_console_output", "krun_start_enter"]


@pytest.fixture
def double_log(tmp_path: Path, libkrun_double: Path,
               monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "krun-calls.jsonl"
    monkeypatch.setenv("III_LIBKRUN_PATH", str(libkrun_double))
    monkeypatch.setenv("KRUN_DOUBLE_LOG", str(log))
    monkeypatch.delenv("KRUN_DOUBLE_FAIL", raising=False)
    return log


def test_call_sequence_and_arguments_for_a_real_spec(
        sandboxes: Sandboxes, double_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("III_CANARY_LEAK", "leaked")
    env = {**SANDBOX_ENV, "III_WORKER_NAME": "w1", "III_ISOLATION": "libkrun"}
    params = sandboxes.params(
        ["sh", "-c", "echo from-guest $III_WORKER_NAME; echo made > /guest-file; pwd; exit 3"],
        backend="libkrun", env=env, cpus=3, memory_mib=768, workdir="/workspace")
    result = sandboxes.spawn(params)
    assert (result.backend, result.limits) == ("libkrun", "enforced")
    code, status = sandboxes.wait(result, params)
    calls = read_calls(double_log)
    assert [c["call"] for c in calls] == CALL_ORDER
    by = {c["call"]: c for c in calls}
    assert all(c["result"] == 0 for c in calls)
    assert by["krun_set_vm_config"]["num_vcpus"] == 3
    assert by["krun_set_vm_config"]["ram_mib"] == 768
    assert by["krun_set_root"]["root_path"] == params.merged
    assert by["krun_set_workdir"]["workdir_path"] == "/workspace"
    assert by["krun_set_exec"]["exec_path"] == "sh"
    assert by["krun_set_exec"]["argv"] == params.argv[1:]
    assert by["krun_set_exec"]["envp"] == [f"{k}={v}" for k, v in env.items()]
    assert not any("III_CANARY_LEAK" in e for e in by["krun_set_exec"]["envp"])  # type: ignore
    assert by["krun_set_port_map"]["port_map"] == []
    assert by["krun_set_rlimits"]["rlimits"] == ["7=65536:65536"]
    assert by["krun_set_console_output"]["c_filepath"] == params.log_path
    # the workload really ran in the overlay root and its status went through the launcher
    log = Path(params.log_path).read_text()
    assert "from-guest w1" in log and "/workspace" in log
    assert (Path(params.rootfs.upper) / "guest-file").read_text() == "made\n"  # type: ignore
    assert (code, status.exit_code) == (3, 3)


def test_negative_return_becomes_vmm_error_naming_the_call(
        sandboxes: Sandboxes, double_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRUN_DOUBLE_FAIL", "krun_set_root:-2")
    params = sandboxes.params(["true"], backend="libkrun")
    with pytest.raises(LaunchFailed) as info:
        sandboxes.spawn(params)
    assert info.value.exit_code == 125
    assert "krun_set_root failed: -2 (ENOENT" in str(info.value)
    calls = [c["call"] for c in read_calls(double_log)]
    assert calls[-1] == "krun_set_root" and "krun_start_enter" not in calls
    exit_json = Path(params.exit_path).read_text()
    assert "krun_set_root failed: -2 (ENOENT" in exit_json


def test_start_enter_returning_is_an_error(sandboxes: Sandboxes, double_log: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRUN_DOUBLE_FAIL", "krun_start_enter:-22")
    params = sandboxes.params(["true"], backend="libkrun")
    result = sandboxes.spawn(params)
    code, status = sandboxes.wait(result, params)
    assert code == status.exit_code == 125
    assert status.error == "krun_start_enter failed: -22 (EINVAL: Invalid argument)"


def test_in_process_binding_raises_vmm_error(double_log: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRUN_DOUBLE_FAIL", "krun_set_vm_config:-22")
    krun = Libkrun.load()
    with pytest.raises(VmmError) as info:
        configure(krun, root="/r", workdir="/", argv=["x"], env={}, cpus=1, memory_mib=64,
                  console="/c")
    assert (info.value.call, info.value.errno) == ("krun_set_vm_config", -22)
    assert str(info.value).startswith("krun_set_vm_config failed: -22 (EINVAL")


def test_empty_env_is_an_empty_array_never_null(double_log: Path) -> None:
    krun = Libkrun.load()
    configure(krun, root="/r", workdir="/", argv=["/bin/x"], env={}, cpus=1, memory_mib=64,
              console="/c")
    exec_call = next(c for c in read_calls(double_log) if c["call"] == "krun_set_exec")
    assert exec_call["envp"] == [] and exec_call["argv"] == []


def test_sigterm_reaches_the_guest(sandboxes: Sandboxes, double_log: Path) -> None:
    params = sandboxes.params(["sh", "-c", ("trap 'echo guest-term; exit 9' TERM; echo ready; "
                               "while :; do sleep 0.05; done")], backend="libkrun")
    result = sandboxes.spawn(params)
    wait_until(lambda: "ready" in Path(params.log_path).read_text(), 10, "guest ready")
    os.kill(result.pid, signal.SIGTERM)
    code, status = sandboxes.wait(result, params)
    assert (code, status.exit_code) == (9, 9)


def test_sigkill_of_the_launcher_kills_the_vm(sandboxes: Sandboxes, double_log: Path) -> None:
    params = sandboxes.params(["sh", "-c", "echo $$ > /guest-pid; sleep 1000; :"],
                              backend="libkrun")
    result = sandboxes.spawn(params)
    pid_file = Path(params.rootfs.upper) / "guest-pid"  # type: ignore[union-attr]
    guest = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 10,
                           "guest pid"))  # no pid namespace here: this is a host pid
    os.kill(result.pid, signal.SIGKILL)
    os.waitpid(result.pid, 0)
    wait_until(lambda: not Path(f"/proc/{guest}").exists()
               or Path(f"/proc/{guest}/stat").read_text().split()[2] == "Z", 10, "guest gone")
    wait_until(lambda: not Path(f"/proc/{result.sandbox_pid}").exists(), 10, "vmm gone")


@pytest.mark.libkrun
def test_real_libkrun_boots_a_guest(sandboxes: Sandboxes) -> None:
    if os.environ.get("III_TEST_REAL_LIBKRUN") != "1":
        pytest.skip("needs a real libkrun and a working KVM (III_TEST_REAL_LIBKRUN=1)")
    code, status, log = sandboxes.run(["sh", "-c", "echo hello-from-vm"], backend="libkrun")
    assert (code, status.exit_code) == (0, 0) and "hello-from-vm" in log
