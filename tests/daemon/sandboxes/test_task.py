from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.errors import Conflict, InvalidState
from daemon.sandboxes.boot import BootSpec, launch_params
from daemon.sandboxes.layout import SandboxLayout
from daemon.sandboxes.procinfo import (
    PidRecord,
    parent_pid,
    process_start_time,
    read_pid_record,
    write_pid_record,
)
from daemon.sandboxes.provision import Provisioner
from daemon.sandboxes.task import SandboxTask, TaskStatus
from tests.support.wait import async_wait_until, wait_until
from vmm_ffi.params import LaunchParams

ENV = {"PATH": "/bin"}


def params(layout: SandboxLayout, image: Path, provisioner: Provisioner,
           script: str) -> LaunchParams:
    root = provisioner.provision(layout, image)
    boot = BootSpec(name=layout.name, image_rootfs=str(image), cpus=1, memory_mib=256)
    return launch_params(layout, boot, root, ENV, ["/bin/sh", "-c", script], "/")


def log_has(layout: SandboxLayout, text: str) -> bool:
    try:
        return text in layout.worker_log.read_text()
    except FileNotFoundError:
        return False


def pids_running(token: str) -> list[int]:
    """Host pids with an argv element starting with ``token`` (a marker in the workload)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if any(a.startswith(token.encode()) for a in cmd.split(b"\0")) and state != "Z" and int(entry) != os.getpid():
            found.append(int(entry))
    return found


async def test_worker_that_exits_immediately(layout: SandboxLayout, busybox_image: Path,
                                             provisioner: Provisioner) -> None:
    task = SandboxTask(layout)
    pid = await task.start(params(layout, busybox_image, provisioner, "echo bye; exit 7"))
    rec = read_pid_record(layout.pid_file)
    assert rec is not None and rec.pid == pid and rec.start_time > 0
    status = await task.wait(10)
    assert status.exit_code == 7 and status.signal is None
    assert task.state().status is TaskStatus.STOPPED
    assert log_has(layout, "bye")
    assert (await task.delete()) == status
    assert not layout.pid_file.exists()


async def test_stop_sends_sigterm(layout: SandboxLayout, busybox_image: Path,
                                  provisioner: Provisioner) -> None:
    task = SandboxTask(layout)
    await task.start(params(layout, busybox_image, provisioner, "exec sleep 1000"))
    assert task.state().status is TaskStatus.RUNNING
    status = await task.stop(timeout=10)
    assert (status.exit_code, status.signal) == (128 + signal.SIGTERM, signal.SIGTERM)


async def test_worker_ignoring_sigterm_is_killed_after_timeout(
        layout: SandboxLayout, busybox_image: Path, provisioner: Provisioner) -> None:
    task = SandboxTask(layout)
    script = "trap '' TERM; echo ready; while :; do sleep 1; done"
    await task.start(params(layout, busybox_image, provisioner, script))
    await async_wait_until(lambda: asyncio.to_thread(log_has, layout, "ready"), 10, "ready")
    t0 = time.monotonic()
    status = await task.stop(timeout=0.5)
    assert time.monotonic() - t0 >= 0.5
    assert status.signal == signal.SIGKILL and status.exit_code == 137
    with pytest.raises(InvalidState):
        await SandboxTask(layout).stop()


async def test_launcher_sigkill_leaves_no_stray_processes(
        layout: SandboxLayout, busybox_image: Path, provisioner: Provisioner) -> None:
    task = SandboxTask(layout)
    script = "sleep 4711 & sleep 4712 & (sleep 4713 &) ; echo ready; wait"
    pid = await task.start(params(layout, busybox_image, provisioner, script))
    await async_wait_until(lambda: asyncio.to_thread(log_has, layout, "ready"), 10, "ready")
    wait_until(lambda: len(pids_running("471")) == 3, 10, "three sleepers")
    os.kill(pid, signal.SIGKILL)
    status = await task.wait(10)
    assert status.signal == signal.SIGKILL and status.error
    wait_until(lambda: not pids_running("471"), 10, "sandbox processes to die")


async def test_two_concurrent_starts_second_refused(
        layout: SandboxLayout, busybox_image: Path, provisioner: Provisioner) -> None:
    p = params(layout, busybox_image, provisioner, "exec sleep 1000")
    a, b = SandboxTask(layout), SandboxTask(layout)
    results = await asyncio.gather(a.start(p), b.start(p), return_exceptions=True)
    conflicts = [r for r in results if isinstance(r, Conflict)]
    pids = [r for r in results if isinstance(r, int)]
    assert len(conflicts) == 1 and len(pids) == 1, results
    # one launcher, not two (the sandbox init is a fork of it with the same cmdline)
    procs = pids_running(str(layout.bootstrap))
    assert len([p for p in procs if parent_pid(p) not in procs]) == 1
    # and a later start while it runs is refused too (pid-file check)
    with pytest.raises(Conflict, match="already running"):
        await SandboxTask(layout).start(p)
    started = a if a.pid else b
    await started.stop(5)


async def test_wait_timeout_and_never_started(layout: SandboxLayout, busybox_image: Path,
                                              provisioner: Provisioner) -> None:
    task = SandboxTask(layout)
    assert task.state().status is TaskStatus.CREATED
    with pytest.raises(InvalidState):
        await task.wait()
    await task.start(params(layout, busybox_image, provisioner, "exec sleep 1000"))
    with pytest.raises(TimeoutError):
        await task.wait(0.1)
    with pytest.raises(InvalidState, match="still running"):
        await task.delete()
    await task.stop(5)


START_IN_OTHER_PROCESS = """
import asyncio, sys
from pathlib import Path
from daemon.sandboxes.layout import SandboxLayout
from daemon.sandboxes.task import SandboxTask
from vmm_ffi.params import LaunchParams
import msgspec
async def main():
    lay = SandboxLayout(Path(sys.argv[1]), sys.argv[2])
    p = msgspec.json.decode(sys.argv[3], type=LaunchParams)
    print(await SandboxTask(lay).start(p), flush=True)
asyncio.run(main())
"""


async def test_reattach_after_daemon_restart(layout: SandboxLayout, busybox_image: Path,
                                             provisioner: Provisioner) -> None:
    import msgspec
    p = params(layout, busybox_image, provisioner, "echo up; exec sleep 1000")
    # The "old daemon" is another process that starts the launcher and exits: the launcher
    # is then not our child.
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", START_IN_OTHER_PROCESS, str(layout.home),
                          layout.name, msgspec.json.encode(p).decode()],
                         check=True, capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[3])
    pid = int(out.stdout.strip())
    task = SandboxTask.reattach(layout)
    assert task is not None and task.pid == pid
    assert task.state().status is TaskStatus.RUNNING
    with pytest.raises(ChildProcessError):
        await asyncio.to_thread(os.waitpid, pid, os.WNOHANG)  # really not our child
    status = await task.stop(5)
    assert status.signal == signal.SIGTERM
    await task.delete()
    assert SandboxTask.reattach(layout) is None


async def test_reattach_rejects_stale_and_reused_pids(
        layout: SandboxLayout, busybox_image: Path, provisioner: Provisioner) -> None:
    layout.dir.mkdir(parents=True)
    # a live process that is not our launcher (pid reused by something else)
    me = PidRecord(pid=os.getpid(), start_time=process_start_time(os.getpid()) or 0)
    write_pid_record(layout.pid_file, me)
    assert SandboxTask.reattach(layout) is None
    assert not layout.pid_file.exists()
    # our launcher's pid but another start time (the launcher died, the pid came back)
    task = SandboxTask(layout)
    pid = await task.start(params(layout, busybox_image, provisioner, "exec sleep 1000"))
    try:
        rec = read_pid_record(layout.pid_file)
        assert rec is not None
        write_pid_record(layout.pid_file, PidRecord(pid=pid, start_time=rec.start_time + 1))
        assert SandboxTask.reattach(layout) is None and not layout.pid_file.exists()
        # garbage or missing pid file while our launcher runs: found by its command line
        layout.pid_file.write_text("not json")
        found = SandboxTask.reattach(layout)
        assert found is not None and found.pid == pid
        assert read_pid_record(layout.pid_file) == PidRecord(
            pid=pid, start_time=rec.start_time, sandbox_pid=rec.sandbox_pid)
        found.close()
        layout.pid_file.unlink()
        found = SandboxTask.reattach(layout)
        assert found is not None and found.pid == pid
        found.close()
    finally:
        await task.stop(5)


async def test_macos_launcher_runs_under_the_signed_interpreter(
        layout: SandboxLayout, busybox_image: Path, provisioner: Provisioner,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No Mac here: the platform is said to be darwin and `codesign` is a recording stand-in
    # (it signs nothing); the copied interpreter really runs the launcher and the sandbox.
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    record = tmp_path / "codesign-calls"
    (bindir / "codesign").write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    (bindir / "codesign").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    task_params = params(layout, busybox_image, provisioner, "echo signed-up; exec sleep 100")
    monkeypatch.setattr(sys, "platform", "darwin")
    task = SandboxTask(layout)
    pid = await task.start(task_params)
    monkeypatch.setattr(sys, "platform", "linux")
    try:
        signed = layout.home / "bin" / "python3-iii"
        assert os.readlink(f"/proc/{pid}/exe") == str(signed)
        assert "--entitlements" in record.read_text()
        await async_wait_until(lambda: asyncio.sleep(0, log_has(layout, "signed-up")), 10,
                               "the workload's output")
    finally:
        await task.stop(5)


async def test_reattach_and_stop_without_proc_or_pidfd(
        layout: SandboxLayout, busybox_image: Path, provisioner: Provisioner,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The macOS path run here: process facts from ps(1), no pidfd_open (wait polls).
    from daemon.sandboxes import processes, procinfo

    monkeypatch.setattr(procinfo, "TABLE", processes.PsTable())
    monkeypatch.delattr(os, "pidfd_open")
    first = SandboxTask(layout)
    pid = await first.start(params(layout, busybox_image, provisioner,
                                   "echo up; exec sleep 1000"))
    first.close()
    layout.pid_file.unlink()  # the daemon died before writing it: found by searching ps
    task = SandboxTask.reattach(layout)
    assert task is not None and task.pid == pid
    assert task.state().status is TaskStatus.RUNNING
    assert read_pid_record(layout.pid_file) == task._record
    status = await task.stop(5)
    assert status.signal == signal.SIGTERM
    await task.delete()
    assert SandboxTask.reattach(layout) is None
    await asyncio.to_thread(os.waitpid, pid, 0)  # the first handle was its parent: reap it
