"""no_new_privs + the seccomp filter, from inside real namespace sandboxes.

A static C probe makes each refused call for real (``tests/support/syscall_probe.c``); the same
probe without the filter shows which refusals are the filter's own and not the kernel's.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.support.rootfs import build_deb, extract_python_rootfs
from tests.support.syscall_probe import build_syscall_probe, parse
from tests.vmm_ffi.conftest import Sandboxes, workload_lines
from vmm_ffi.errors import SetupFailed
from vmm_ffi.isolation import seccomp
from vmm_ffi.launch import LaunchFailed, launcher_python_path, spawn_launcher
from vmm_ffi.params import EXIT_SETUP_FAILED, BindMount

PROBE = "/usr/local/bin/syscall-probe"
# Each answers EPERM under the filter (the kernel alone may answer ENOSYS/EINVAL/ok).
REFUSED = ("kexec_load", "init_module", "finit_module", "bpf", "keyctl", "add_key",
           "unshare_user", "unshare_mount", "clone_newuser", "mount_proc", "mount_tmpfs",
           "umount_proc", "ptrace_init", "perf_event_open", "userfaultfd", "open_by_handle_at",
           "io_uring_setup")
STATUS = "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status"
# Writing /proc/sys: the read-only bind answers EROFS to a sandbox root that owns the files
# (a root launcher); a non-root launcher's sandbox root does not own them (host root's, unmapped)
# and the permission check answers EACCES before the mount is looked at.
SYSCTL_REFUSAL = "EROFS" if os.geteuid() == 0 else "EACCES"


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_syscall_probe(tmp_path_factory.mktemp("probe"))


def run_probe(sandboxes: Sandboxes, probe: Path, **overrides: object) -> tuple[int, str]:
    code, status, log = sandboxes.run(
        ["sh", "-c", f"{STATUS}; {PROBE}; echo after=$?"],
        binds=[BindMount(source=str(probe), target=PROBE)], **overrides)
    assert status.exit_code == code
    return code, "\n".join(workload_lines(log))


def test_refused_calls_answer_eperm_and_the_workload_keeps_running(
        sandboxes: Sandboxes, probe: Path) -> None:
    code, out = run_probe(sandboxes, probe)
    results = parse(out)
    assert code == 0, out
    assert {name: results.get(name) for name in REFUSED} == dict.fromkeys(REFUSED, "EPERM")
    assert results["write_sysctl"] == SYSCTL_REFUSAL  # /proc/sys is a read-only bind
    assert results["fork"] == "ok"  # clone3 answers ENOSYS; glibc falls back to clone
    assert "alive" in out and "after=0" in out  # never SIGSYS
    assert "NoNewPrivs:\t1" in out and "Seccomp:\t2" in out
    if os.uname().machine == "x86_64" and results.get("i386_getpid") == "ok":
        # a 32-bit call is filtered the same (not killed as a "bad arch")
        assert results["i386_keyctl"] == "EPERM"


def test_without_the_filter_the_same_calls_go_through(sandboxes: Sandboxes,
                                                      probe: Path) -> None:
    """The control: these refusals come from the filter, not from the user namespace."""
    code, out = run_probe(sandboxes, probe, seccomp=False)
    results = parse(out)
    assert code == 0, out
    # (the rest the kernel refuses here anyway: no kexec/modules in a user namespace, a
    # non-dumpable init, proc over a /proc with read-only binds; the filter is a second wall)
    for name in ("keyctl", "add_key", "unshare_user", "unshare_mount", "mount_tmpfs"):
        assert results[name] == "ok", (name, out)
    assert results["write_sysctl"] == SYSCTL_REFUSAL  # the bind does not need the filter
    assert "Seccomp:\t0" in out


def test_launch_result_names_the_filter(sandboxes: Sandboxes) -> None:
    filtered = sandboxes.params(["true"])
    assert sandboxes.spawn(filtered).seccomp == seccomp.FILTER_NAME == "iii-default/1"
    unfiltered = sandboxes.params(["true"], seccomp=False)
    assert sandboxes.spawn(unfiltered).seccomp is None


def test_missing_libseccomp_fails_the_launch_with_the_package(
        sandboxes: Sandboxes, tmp_path: Path) -> None:
    # A cffi backend whose dlopen fails the way a host without libseccomp2 does.
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "_cffi_backend.py").write_text(
        "class FFI:\n"
        "    def __init__(self, *args, **kwargs):\n        pass\n"
        "    def dlopen(self, name):\n"
        "        raise OSError(f'{name}: cannot open shared object file')\n")
    env = {"PYTHONPATH": f"{fake}:{launcher_python_path()}"}
    params = sandboxes.params(["sh", "-c", "echo unfiltered"])
    with pytest.raises(LaunchFailed) as info:
        spawn_launcher(params, sandboxes.state_dir(params), extra_env=env)
    assert f"exited with code {EXIT_SETUP_FAILED} before answering" in str(info.value)
    log = Path(params.log_path).read_text()
    assert "apt-get install libseccomp2" in log and "unfiltered" not in log
    # the explicit opt-out runs without it
    params = sandboxes.params(["sh", "-c", "echo unfiltered"], seccomp=False)
    result = spawn_launcher(params, sandboxes.state_dir(params), extra_env=env)
    sandboxes.pids.append(result.pid)
    assert result.seccomp is None
    code, _ = sandboxes.wait(result, params)
    assert code == 0 and "unfiltered" in Path(params.log_path).read_text()


def test_load_names_the_package_when_the_library_is_absent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seccomp, "LIBRARY", "libseccomp-absent.so.9")
    monkeypatch.setattr(seccomp, "_lib", None)
    with pytest.raises(SetupFailed, match=r"libseccomp-absent\.so\.9 not found "
                                          r"\(apt-get install libseccomp2\)"):
        seccomp.load()


@pytest.fixture(scope="module")
def python_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_python_rootfs(tmp_path_factory.mktemp("image") / "rootfs")


PYTHON_CHECKS = """
import asyncio, ctypes, errno, os, subprocess, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.syscall(250, 0, -3, 0)  # keyctl(KEYCTL_GET_KEYRING_ID)
print("keyctl", rc, errno.errorcode.get(ctypes.get_errno()))
t = threading.Thread(target=lambda: print("thread ok")); t.start(); t.join()
print(subprocess.run([sys.executable, "-c", "print('child ok')"], capture_output=True,
                     text=True).stdout.strip())
async def main():
    p = await asyncio.create_subprocess_exec("true"); print("asyncio", await p.wait())
asyncio.run(main())
"""


def test_python_and_apt_get_work_under_the_filter(sandboxes: Sandboxes, python_rootfs: Path,
                                                  tmp_path: Path) -> None:
    deb = build_deb(tmp_path, "iii-seccomp-test",
                    {"/usr/share/iii-seccomp-test/ok": (0o644, "installed\n")})
    script = tmp_path / "checks.py"
    script.write_text(PYTHON_CHECKS)
    sandboxes.lower = python_rootfs
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": "/root", "LANG": "C.UTF-8"}
    code, status, log = sandboxes.run(
        ["/bin/sh", "-c", ("set -e; grep Seccomp: /proc/self/status; python3 /mnt/checks.py; "
                           "apt-get install -y -q /mnt/pkg.deb >/dev/null 2>&1; "
                           "cat /usr/share/iii-seccomp-test/ok; "
                           "dpkg -s iii-seccomp-test | grep Status")],
        binds=[BindMount(source=str(deb), target="/mnt/pkg.deb"),
               BindMount(source=str(script), target="/mnt/checks.py")], env=env, workdir="/")
    lines = workload_lines(log)
    assert (code, status.exit_code) == (0, 0), "\n".join(lines[-20:])
    assert lines == ["Seccomp:\t2", "keyctl -1 EPERM", "thread ok", "child ok", "asyncio 0",
                     "installed", "Status: install ok installed"]


def test_the_committed_ffi_module_matches_the_declarations(tmp_path: Path) -> None:
    fresh = tmp_path / "_seccomp_ffi.py"
    seccomp.emit_ffi_module(str(fresh))
    # by its dotted name: the generated code names itself vmm_ffi._seccomp_ffi
    spec = importlib.util.find_spec("vmm_ffi._seccomp_ffi")
    assert spec is not None and spec.origin is not None
    committed = Path(spec.origin)
    assert fresh.read_text() == committed.read_text(), \
        "regenerate: python -c 'from vmm_ffi.isolation.seccomp import emit_ffi_module as e; " \
        "e(\"vmm_ffi/_seccomp_ffi.py\")'"


def test_libkrun_vmm_process_runs_with_no_new_privs(
        sandboxes: Sandboxes, libkrun_double: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("III_LIBKRUN_PATH", str(libkrun_double))
    monkeypatch.delenv("KRUN_DOUBLE_FAIL", raising=False)
    params = sandboxes.params(["sh", "-c", "echo up; exec sleep 30"], backend="libkrun")
    result = sandboxes.spawn(params)
    assert result.seccomp is None  # no filter on the VMM: only no_new_privs
    status = Path(f"/proc/{result.sandbox_pid}/status").read_text()
    assert "NoNewPrivs:\t1" in status and "Seccomp:\t0" in status
