"""The namespace backend end to end: real user/mount/pid/uts/ipc namespaces, a real overlay."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

from tests.support.pid_ns import processes_in_pid_ns
from tests.support.wait import wait_until
from tests.vmm_ffi.conftest import SANDBOX_ENV, Sandboxes, workload_lines
from vmm_ffi.params import BindMount, DirectoryRoot


def test_workload_is_pid1s_child_and_sees_no_host_process(sandboxes: Sandboxes) -> None:
    code, status, log = sandboxes.run(
        ["sh", "-c", "echo pid=$$ ppid=$PPID; echo procs=$(ls /proc | grep -E '^[0-9]+$')"])
    assert (code, status.exit_code) == (0, 0)
    assert "pid=2 ppid=1" in log
    line = next(x for x in workload_lines(log) if x.startswith("procs="))
    procs = [int(p) for p in line.removeprefix("procs=").split()]
    # only the init, the shell and its own children: nothing of the host's hundreds of pids
    assert max(procs) < 10 and len(procs) <= 6, procs


def test_hostname_is_set(sandboxes: Sandboxes) -> None:
    _, _, log = sandboxes.run(["hostname"], hostname="my-worker")
    assert workload_lines(log) == ["my-worker"]


def test_writes_land_in_upper_and_lower_is_unchanged(sandboxes: Sandboxes,
                                                     busybox_lower: Path) -> None:
    params = sandboxes.params(
        ["sh", "-c", "echo x > /escape-test && echo hacker::0:0::/:/bin/sh >> /etc/passwd"])
    before = (busybox_lower / "etc/passwd").read_text()
    result = sandboxes.spawn(params)
    assert sandboxes.wait(result, params)[0] == 0
    upper = Path(params.rootfs.upper)  # type: ignore[union-attr]
    assert (upper / "escape-test").read_text() == "x\n"
    assert "hacker" in (upper / "etc/passwd").read_text()
    assert not Path("/escape-test").exists()
    assert not (busybox_lower / "escape-test").exists()
    assert (busybox_lower / "etc/passwd").read_text() == before


def test_host_filesystem_is_not_visible(sandboxes: Sandboxes, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("do not read")
    _, _, log = sandboxes.run(["sh", "-c", f"cat {secret}; echo > {secret}; echo rc=$?"])
    assert "do not read" not in log
    assert secret.read_text() == "do not read"


def test_tmp_is_tmpfs_and_dev_is_minimal(sandboxes: Sandboxes) -> None:
    params = sandboxes.params(["sh", "-c", ("echo t > /tmp/t; ls /dev; echo hi > /dev/null; "
                               "echo s > /dev/shm/s && cat /dev/shm/s; ls /dev/pts; "
                               "head -c 4 /dev/urandom | wc -c; grep ' /tmp ' /proc/mounts")])
    result = sandboxes.spawn(params)
    assert sandboxes.wait(result, params)[0] == 0
    log = Path(params.log_path).read_text()
    assert not (Path(params.rootfs.upper) / "tmp/t").exists()  # type: ignore[union-attr]
    assert "tmpfs" in workload_lines(log)[-1]
    for node in ("null", "zero", "urandom", "random", "full", "ptmx", "pts", "shm", "s"):
        assert node in log.split()
    assert "kvm" not in log.split() and "loop0" not in log.split()


def test_env_is_exactly_the_params_env(sandboxes: Sandboxes,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("III_CANARY_LEAK", "leaked")
    env = {**SANDBOX_ENV, "III_WORKER_NAME": "w1", "SPACED": "a b=c"}
    code, _, log = sandboxes.run(["env"], env=env)
    assert code == 0
    seen = dict(line.split("=", 1) for line in log.splitlines() if "=" in line
                and not line.startswith("[iii-launcher]"))
    assert seen == env


def test_workdir_is_created_and_used(sandboxes: Sandboxes) -> None:
    _, _, log = sandboxes.run(["pwd"], workdir="/srv/app")
    assert workload_lines(log) == ["/srv/app"]


@pytest.mark.parametrize(("script", "code", "sig"), [
    ("exit 0", 0, None), ("exit 3", 3, None), ("exit 255", 255, None),
    ("kill -USR1 $$", 128 + signal.SIGUSR1, signal.SIGUSR1),
], ids=["zero", "three", "255", "killed-by-usr1"])
def test_exit_codes_propagate(sandboxes: Sandboxes, script: str, code: int,
                              sig: int | None) -> None:
    launcher_code, status, log = sandboxes.run(["sh", "-c", script])
    assert launcher_code == code
    assert (status.exit_code, status.signal, status.error) == (code, sig, None)
    how = f"killed by signal {sig}, " if sig else ""
    assert log.splitlines()[-1] == f"[iii-launcher] sandbox w1 ended: {how}exit code {code}"


def test_worker_that_exits_immediately(sandboxes: Sandboxes) -> None:
    params = sandboxes.params(["true"])
    result = sandboxes.spawn(params)  # still answers: the result is printed before the exec
    assert result.backend == "namespace" and result.pid > 0
    code, status = sandboxes.wait(result, params)
    assert (code, status.exit_code) == (0, 0)


def test_missing_command_is_127_with_a_message(sandboxes: Sandboxes) -> None:
    code, status, log = sandboxes.run(["no-such-program", "x"])
    assert (code, status.exit_code) == (127, 127)
    assert status.error == "exec no-such-program: No such file or directory"
    assert "exec no-such-program" in log


def test_sigterm_is_forwarded_to_the_workload(sandboxes: Sandboxes) -> None:
    params = sandboxes.params(["sh", "-c", ("trap 'echo got-term; exit 7' TERM; echo ready; "
                               "while :; do sleep 0.05; done")])
    result = sandboxes.spawn(params)
    wait_until(lambda: "ready" in Path(params.log_path).read_text(), 10, "workload ready")
    os.kill(result.pid, signal.SIGTERM)
    code, status = sandboxes.wait(result, params)
    assert (code, status.exit_code) == (7, 7)
    assert "got-term" in Path(params.log_path).read_text()


def test_sigterm_to_a_default_workload_kills_it(sandboxes: Sandboxes) -> None:
    params = sandboxes.params(["sleep", "1000"])
    result = sandboxes.spawn(params)
    os.kill(result.pid, signal.SIGTERM)
    code, status = sandboxes.wait(result, params)
    assert (code, status.exit_code, status.signal) == (143, 143, signal.SIGTERM)


def _pid_ns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def test_worker_ignoring_sigterm_needs_sigkill(sandboxes: Sandboxes) -> None:
    params = sandboxes.params(["sh", "-c", ("trap 'echo ignored-term' TERM; echo ready; "
                               "while :; do sleep 0.05; done")])
    result = sandboxes.spawn(params)
    wait_until(lambda: "ready" in Path(params.log_path).read_text(), 10, "workload ready")
    os.kill(result.pid, signal.SIGTERM)
    wait_until(lambda: "ignored-term" in Path(params.log_path).read_text(), 10, "trap ran")
    assert os.waitpid(result.pid, os.WNOHANG) == (0, 0)  # still running
    ns = _pid_ns(result.sandbox_pid)
    os.kill(result.sandbox_pid, signal.SIGKILL)  # the escalation: kill the sandbox's init
    code, status = sandboxes.wait(result, params)
    assert (code, status.exit_code, status.signal) == (137, 137, signal.SIGKILL)
    wait_until(lambda: not processes_in_pid_ns(ns), 10, "sandbox processes gone")


def test_sigkill_of_the_launcher_leaves_no_stray_process(sandboxes: Sandboxes) -> None:
    marker = f"iii-stray-{uuid.uuid4().hex[:8]}"
    params = sandboxes.params(["sh", "-c", "sh -c 'sleep 1000; :' child & sleep 1000; :",
                               marker])
    result = sandboxes.spawn(params)
    ns = _pid_ns(result.sandbox_pid)

    def marked() -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        pids.append(int(entry))
            except (OSError, ValueError):
                pass
        return pids
    wait_until(lambda: len(processes_in_pid_ns(ns)) >= 4, 10, "workload tree up")
    assert marked()
    os.kill(result.pid, signal.SIGKILL)
    os.waitpid(result.pid, 0)
    wait_until(lambda: not processes_in_pid_ns(ns) and not marked(), 10, "no stray processes")


def test_directory_root_is_bind_mounted(sandboxes: Sandboxes, tmp_path: Path,
                                        busybox_lower: Path) -> None:
    import shutil
    copy = tmp_path / "copied-root"
    shutil.copytree(busybox_lower, copy, symlinks=True)
    params = sandboxes.params(["sh", "-c", "echo in-copy > /marker"],
                              rootfs=DirectoryRoot(path=str(copy)))
    result = sandboxes.spawn(params)
    assert result.root_mode == "directory"
    assert sandboxes.wait(result, params)[0] == 0
    assert (copy / "marker").read_text() == "in-copy\n"


def test_binds_are_visible_and_read_only(sandboxes: Sandboxes, tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.1\n")
    params = sandboxes.params(
        ["sh", "-c", "cat /etc/resolv.conf; echo x >> /etc/resolv.conf || echo write-refused"],
        binds=[BindMount(source=str(resolv), target="/etc/resolv.conf")])
    result = sandboxes.spawn(params)
    sandboxes.wait(result, params)
    log = Path(params.log_path).read_text()
    assert "nameserver 192.0.2.1" in log and "write-refused" in log
    assert resolv.read_text() == "nameserver 192.0.2.1\n"


def test_mounts_do_not_leak_to_the_host(sandboxes: Sandboxes) -> None:
    params = sandboxes.params(["sleep", "1000"])
    result = sandboxes.spawn(params)
    with open("/proc/self/mounts") as f:
        assert params.merged not in f.read()
    os.kill(result.pid, signal.SIGTERM)
    sandboxes.wait(result, params)


def test_planted_symlinks_cannot_aim_mounts_at_the_host(sandboxes: Sandboxes,
                                                        busybox_lower: Path,
                                                        tmp_path: Path) -> None:
    import shutil
    evil = tmp_path / "evil-image"
    shutil.copytree(busybox_lower, evil, symlinks=True)
    host_dir = tmp_path / "host-side"
    host_dir.mkdir()
    shutil.rmtree(evil / "tmp")
    (evil / "tmp").symlink_to(host_dir)  # absolute: resolves on the host before pivot_root
    (evil / "opt").symlink_to(host_dir)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.1\n")
    params = sandboxes.params(["sh", "-c", "grep ' /tmp ' /proc/mounts"],
                              rootfs=DirectoryRoot(path=str(evil)))
    result = sandboxes.spawn(params)
    assert sandboxes.wait(result, params)[0] == 0  # /tmp replaced by a real dir, tmpfs on it
    assert "tmpfs" in Path(params.log_path).read_text()
    bad = sandboxes.params(["true"], rootfs=DirectoryRoot(path=str(evil)),
                           binds=[BindMount(source=str(resolv), target="/opt/resolv.conf")])
    from vmm_ffi.errors import LaunchFailed
    with pytest.raises(LaunchFailed) as info:
        sandboxes.spawn(bad)
    assert "/opt is a symlink in the image; refusing to follow it" in str(info.value)
    assert list(host_dir.iterdir()) == []  # nothing created or mounted on the host side


def test_init_reaps_orphans(sandboxes: Sandboxes) -> None:
    # The orphan's parent subshell exits at once, so the orphan is re-parented to our PID 1;
    # when it exits, only PID 1's reaping makes its /proc entry go away.
    script = ("(sh -c 'read x < /dev/zero; exit 0' & echo $! > /tmp/orphan); "
              "pid=$(cat /tmp/orphan); kill $pid; i=0; "
              "while [ -e /proc/$pid ] && [ $i -lt 200 ]; do i=$((i+1)); sleep 0.02; done; "
              "[ -e /proc/$pid ] && echo zombie-left || echo reaped")
    code, _, log = sandboxes.run(["sh", "-c", script])
    assert code == 0 and workload_lines(log) == ["reaped"]


def test_nofile_is_raised(sandboxes: Sandboxes) -> None:
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    _, _, log = sandboxes.run(["sh", "-c", "ulimit -n"])
    assert workload_lines(log) == [str(want)]


def test_sigterm_right_after_spawn_is_not_lost(sandboxes: Sandboxes) -> None:
    # Sent the instant the launcher answers, possibly before its init has forked the workload.
    for _ in range(5):
        params = sandboxes.params(["sleep", "1000"])
        result = sandboxes.spawn(params)
        os.kill(result.pid, signal.SIGTERM)
        assert sandboxes.wait(result, params)[1].signal == signal.SIGTERM


def test_own_namespaces_but_the_host_network(sandboxes: Sandboxes) -> None:
    kinds = ("user", "mnt", "pid", "uts", "ipc", "net")
    script = "; ".join(f"echo {k}=$(readlink /proc/self/ns/{k})" for k in kinds)
    _, _, log = sandboxes.run(["sh", "-c", script])
    inside = dict(line.split("=", 1) for line in workload_lines(log))
    host = {k: os.readlink(f"/proc/self/ns/{k}") for k in kinds}
    for kind in ("user", "mnt", "pid", "uts", "ipc"):
        assert inside[kind] != host[kind], kind
    assert inside["net"] == host["net"]  # SPEC §8: the namespace backend shares the network
