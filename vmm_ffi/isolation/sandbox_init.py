"""The sandbox's PID 1 (namespace backend) and the exec of the workload.

PID 1 of a pid namespace gets no default signal actions, so a workload run directly as PID 1
would ignore SIGTERM. Like tini, this init forwards signals to the workload, reaps every orphan,
and ends when the workload ends (the kernel then kills whatever is left in the namespace).
It reports to the launcher over ``status_fd`` as JSON lines: ``{"ready": true}`` once the root
is built, ``{"error": ...}`` if building it failed, ``{"status": <wait status>, "exec_error":
...}`` when the workload is gone.
"""

from __future__ import annotations

import errno
import os
import resource
import select  # imported here: a launcher on shifted ids may not read the stdlib later
import signal
import sys
from collections.abc import Callable

import msgspec

from vmm_ffi import syscalls as sc
from vmm_ffi.errors import SetupFailed
from vmm_ffi.isolation import seccomp
from vmm_ffi.isolation.namespace import enter_sandbox_root, is_executable_file, resolve_program
from vmm_ffi.params import EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_SETUP_FAILED, LaunchParams

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)
# Python ignores these by default; a workload must start with the ordinary dispositions.
_PYTHON_IGNORED = (signal.SIGPIPE, signal.SIGXFSZ)


def send(fd: int, message: dict[str, object]) -> None:
    """One JSON line to the launcher."""
    os.write(fd, msgspec.json.encode(message) + b"\n")


def guard_parent_death(alive_r: int) -> None:
    """Die with the launcher: PDEATHSIG, then close the race where it died before prctl.

    ``alive_r`` is the read end of a pipe only the launcher still writes to: readable (EOF)
    means the launcher is gone already.
    """
    if sys.platform.startswith("linux"):
        sc.set_parent_death_signal(signal.SIGKILL)
        readable, _, _ = select.select([alive_r], [], [], 0)
        if readable:
            os._exit(EXIT_SETUP_FAILED)
        return
    # No PDEATHSIG elsewhere (macOS): a thread waits for EOF on the pipe and kills us. cffi
    # releases the GIL inside krun_start_enter, so the thread runs while the VM does.
    import threading

    def watch() -> None:
        while os.read(alive_r, 1):
            pass
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, name="parent-death", daemon=True).start()


def cap_processes(limit: int) -> None:
    """RLIMIT_NPROC (soft and hard) for this init and everything under it: where no pids cgroup
    can be made (a non-root daemon on cgroup v1), a fork bomb still stops. Since Linux 5.14 the
    count is per user namespace and uid, so this caps each of the sandbox's uids at ``limit``
    tasks (threads included) without counting the user's processes outside the sandbox; the
    sandbox cannot raise it (that needs CAP_SYS_RESOURCE in the host's user namespace)."""
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))


def exec_workload(params: LaunchParams, log_fd: int, exec_err_w: int) -> None:
    """In the forked workload: clean signal state, stdio, then execve. Never returns."""
    try:
        os.setsid()
        os.umask(0o022)  # the same file modes whatever the daemon's umask was
        for sig in FORWARDED_SIGNALS + _PYTHON_IGNORED:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        if params.user is not None:  # the image's USER: drop sandbox root (groups first)
            os.setgroups(params.user.groups)
            os.setresgid(params.user.gid, params.user.gid, params.user.gid)
            os.setresuid(params.user.uid, params.user.uid, params.user.uid)
        program = resolve_program(params.argv[0], params.env)
        os.execve(program, params.argv, params.env)
    except OSError as exc:
        code = EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_NOT_EXECUTABLE
        if exc.errno == errno.EACCES and not is_executable_file(params.argv[0]):
            code = EXIT_NOT_EXECUTABLE
        message = f"exec {params.argv[0]}: {exc.strerror}"
        try:
            os.write(2, f"[iii-launcher] {message}\n".encode())
            os.write(exec_err_w, f"{code}:{message}".encode())
        finally:
            os._exit(code)
    os._exit(EXIT_SETUP_FAILED)


def _forwarder(target: list[int], pending: list[int]) -> Callable[[int, object], None]:
    def forward(signum: int, _frame: object) -> None:
        if target:
            try:
                os.kill(target[0], signum)
            except ProcessLookupError:
                pass
        else:
            pending.append(signum)
    return forward


def run_init(params: LaunchParams, status_fd: int, alive_r: int, go_r: int,
             log_fd: int, network: Callable[[], str | None] | None = None,
             nproc: int | None = None) -> None:
    """Body of the sandbox init (PID 1). Never returns.

    ``network`` runs before the root is entered (``SandboxNetwork.configure_in_init``); what it returns
    is logged. ``nproc``: cap RLIMIT_NPROC there (``cap_processes``), where no pids cgroup does.
    """
    code = EXIT_SETUP_FAILED
    try:
        _wait_for_go(alive_r, go_r)
        sc.set_process_name("iii-init")
        workload: list[int] = []
        pending: list[int] = []
        forward = _install_forwarder(workload, pending)
        _build_root(params, status_fd, log_fd, network, nproc)
        send(status_fd, {"ready": True})
        pid, err_r = _start_workload(params, log_fd, workload, pending, forward)
        status, exec_error = _wait_workload(pid, err_r)
        send(status_fd, {"status": status, "exec_error": exec_error})
        code = exit_code_of(status)
    except BaseException as exc:  # noqa: BLE001 - PID 1 must end by _exit with a message
        try:
            os.write(2, f"[iii-launcher] sandbox init failed: {exc!r}\n".encode())
        finally:
            os._exit(EXIT_SETUP_FAILED)
    sys.stdout.flush()
    os._exit(code)


def _wait_for_go(alive_r: int, go_r: int) -> None:
    """Die with the launcher, then wait for its go (``1``); anything else ends this init."""
    guard_parent_death(alive_r)
    if os.read(go_r, 1) != b"1":  # the launcher died or gave up before we started
        os._exit(EXIT_SETUP_FAILED)
    os.close(go_r)


def _install_forwarder(workload: list[int],
                       pending: list[int]) -> Callable[[int, object], None]:
    """Forward FORWARDED_SIGNALS to ``workload[0]`` (kept in ``pending`` until it exists)."""
    forward = _forwarder(workload, pending)
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)  # blocked by the launcher
    return forward


def _build_root(params: LaunchParams, status_fd: int, log_fd: int,
                network: Callable[[], str | None] | None, nproc: int | None) -> None:
    """Network, root, process cap, seccomp (in this order); a failure is reported, then exit."""
    try:
        if params.backend == "host":
            os.chdir(params.workdir)
        else:
            note = None if network is None else network()
            if note is not None:
                os.write(log_fd, f"[iii-launcher] network: {note}\n".encode())
            enter_sandbox_root(params)
            if nproc is not None:
                cap_processes(nproc)
            if params.seccomp:  # last: the mounts of the boot itself are done by now
                seccomp.apply()
    except (SetupFailed, OSError) as exc:
        send(status_fd, {"error": str(exc)})
        os._exit(EXIT_SETUP_FAILED)


def _start_workload(params: LaunchParams, log_fd: int, workload: list[int], pending: list[int],
                    forward: Callable[[int, object], None]) -> tuple[int, int]:
    """Fork and exec the workload; returns its pid and the read end of its exec-error pipe."""
    err_r, err_w = os.pipe()  # close-on-exec: EOF means the exec succeeded
    # Signals stay blocked across the fork: one landing in the child before it resets its
    # handlers would run our forwarder there and be lost.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        exec_workload(params, log_fd, err_w)
    os.close(err_w)
    workload.append(pid)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    for signum in pending:
        forward(signum, None)
    return pid, err_r


def _wait_workload(pid: int, err_r: int) -> tuple[int, str | None]:
    """The exec error (if any), then reap every orphan until the workload itself ends."""
    exec_error = os.read(err_r, 4096).decode(errors="replace") or None
    os.close(err_r)
    while True:
        reaped, status = os.waitpid(-1, 0)
        if reaped == pid:
            break
    if exec_error is not None:
        exec_error = exec_error.split(":", 1)[1]
    return status, exec_error


def exit_code_of(status: int) -> int:
    """Wait status -> exit code with the 128+N convention for signals."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code
