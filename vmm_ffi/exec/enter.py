"""Run one command inside a running namespace sandbox: what ``iii worker exec`` runs.

The daemon's fork server (``vmm_ffi.exec.enter_server``) forks a helper per exec that calls
:func:`run` on the client's own stdin/stdout/stderr, passed over the socket, so no byte goes
through the daemon; ``python -m vmm_ffi.exec.enter SPEC.json`` does the same from a fresh
interpreter (by hand, when debugging). It joins the sandbox init's user,
mount, pid, uts, ipc and net namespaces (``setns``: the mount namespace brings the sandbox's
root), forks into the pid namespace, becomes the sandbox's root, and execs the command with the
sandbox's environment in its workdir. Before that it joins the sandbox init's cgroups (the
sandbox's limits cover the command) and, like the workload, runs under no_new_privs and the
sandbox's seccomp filter. With ``tty`` the command gets a session of its own with
stdin as its controlling terminal (the client's pty slave), so Ctrl-C and resizes reach it as
they would over ssh.

Lifetime: both processes have PDEATHSIG=SIGKILL, so a daemon (and with it the fork server)
that dies takes its execs along
(the command would otherwise live on as an orphan of the sandbox's init). The helper exits
with the command's code (128+N when killed by signal N; 127/126 when it cannot be executed).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import sys
import termios
from typing import Any

import msgspec

from vmm_ffi import syscalls as sc
from vmm_ffi.errors import LauncherError
from vmm_ffi.exec import sandbox_fs
from vmm_ffi.isolation import seccomp
from vmm_ffi.isolation.namespace import resolve_program
from vmm_ffi.network.netns import drop_net_admin
from vmm_ffi.params import EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_SETUP_FAILED

CGROUP_ROOT = "/sys/fs/cgroup"
# setns order: the user namespace first (it grants the capabilities the others need).
NAMESPACES = (("user", sc.CLONE_NEWUSER), ("mnt", sc.CLONE_NEWNS), ("uts", sc.CLONE_NEWUTS),
              ("ipc", sc.CLONE_NEWIPC), ("net", sc.CLONE_NEWNET), ("pid", sc.CLONE_NEWPID))
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGWINCH)


class EnterSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where and what to run: the sandbox init's host pid and the command. ``seccomp``: put the
    command under the sandbox's own no_new_privs + filter (what its workload runs under)."""

    sandbox_pid: int
    argv: list[str]
    env: dict[str, str]
    workdir: str = "/"
    tty: bool = False
    seccomp: bool = True
    # the worker's user (its image's USER), so a command runs as the workload does
    uid: int = 0
    gid: int = 0
    groups: list[int] = []
    # a ``sandbox::fs::*`` operation (``vmm_ffi.exec.sandbox_fs``) done in place of ``argv``'s exec
    fs: dict[str, Any] | None = None


def enter(spec: EnterSpec) -> None:
    """Join the sandbox's namespaces (all fds opened first: /proc goes away with the mnt ns)."""
    fds = []
    try:
        for name, flag in NAMESPACES:
            path = f"/proc/{spec.sandbox_pid}/ns/{name}"
            if os.readlink(path) == os.readlink(f"/proc/self/ns/{name}"):
                continue  # shared with us (a sandbox on the host's network, say)
            fds.append((os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag))
        for fd, flag in fds:
            sc.setns(fd, flag)
    finally:
        for fd, _ in fds:
            os.close(fd)


def join_cgroups(sandbox_pid: int, root: str = CGROUP_ROOT) -> None:
    """Move this process into the sandbox init's cgroups (its limits and accounting cover the
    command too): each hierarchy where the init's cgroup differs from ours. Before ``setns``:
    the cgroup file system is the host's. Raises ``OSError`` naming the cgroup."""
    theirs = _cgroups(f"/proc/{sandbox_pid}/cgroup")
    ours = _cgroups("/proc/self/cgroup")
    for hierarchy, path in theirs.items():
        if ours.get(hierarchy) == path:
            continue
        procs = os.path.join(_mount_point(root, hierarchy), path.lstrip("/"), "cgroup.procs")
        try:
            with open(procs, "w") as f:
                f.write("0")
        except OSError as exc:
            raise OSError(exc.errno, f"join the sandbox's cgroup {procs}: "
                                     f"{exc.strerror}") from exc


def _cgroups(proc_file: str) -> dict[str, str]:
    """``/proc/PID/cgroup`` as {controllers: path} ("" for the v2 hierarchy)."""
    with open(proc_file) as f:
        lines = f.read().splitlines()
    pairs = (line.split(":", 2) for line in lines if line.count(":") >= 2)
    return {controllers: path for _id, controllers, path in pairs}


def _mount_point(root: str, controllers: str) -> str:
    """Where a hierarchy is mounted: the root itself for v2, ``root/<controllers>`` for v1
    (``cpu,cpuacct``; a named one such as ``name=systemd`` under its name)."""
    if not controllers:  # v2: the root, or its "unified" mount on a hybrid v1 host
        unified = os.path.join(root, "unified")
        if not os.path.exists(os.path.join(root, "cgroup.controllers")) and os.path.isdir(unified):
            return unified
        return root
    for candidate in (controllers, controllers.removeprefix("name="), *controllers.split(",")):
        if os.path.isdir(os.path.join(root, candidate)):
            return os.path.join(root, candidate)
    raise OSError(errno.ENOENT, f"no mount of the cgroup hierarchy {controllers} under {root}")


def run(spec: EnterSpec) -> int:
    """Enter, fork the command, wait for it; returns the exit code."""
    sc.set_parent_death_signal(signal.SIGKILL)
    try:
        if spec.seccomp:
            seccomp.load()  # before setns: the library lives on the host's file system
        join_cgroups(spec.sandbox_pid)
        enter(spec)
    except (OSError, LauncherError) as exc:
        print(f"error: cannot enter the sandbox: {exc}", file=sys.stderr)
        return EXIT_SETUP_FAILED
    sc.set_parent_death_signal(signal.SIGKILL)  # again: a credentials change clears it
    if os.getppid() == 1:
        return EXIT_SETUP_FAILED  # the daemon died before we asked
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    child = os.fork()
    if child == 0:
        _exec(spec)
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _frame: _forward(child, signum))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _forward(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _exec(spec: EnterSpec) -> None:
    """In the child, now inside the sandbox's pid namespace. Never returns."""
    code = EXIT_SETUP_FAILED
    try:
        for sig in FORWARDED + (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.setsid()
        if spec.tty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        os.setgroups(spec.groups)
        os.setresgid(spec.gid, spec.gid, spec.gid)
        os.setresuid(spec.uid, spec.uid, spec.uid)
        sc.set_parent_death_signal(signal.SIGKILL)  # after setresuid, which clears it
        drop_net_admin()  # as the workload: the sandbox's network policy stays as it is
        os.umask(0o022)
        os.chdir(spec.workdir)
        if spec.seccomp:
            seccomp.apply()
        if spec.fs is not None:
            code = sandbox_fs.run(spec.fs)
            return
        program = resolve_program(spec.argv[0], spec.env)
        code = EXIT_NOT_FOUND
        os.execve(program, spec.argv, spec.env)
    except (OSError, LauncherError) as exc:
        if code == EXIT_NOT_FOUND and isinstance(exc, OSError):  # the execve itself failed
            code = EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_NOT_EXECUTABLE
            what = f"exec {spec.argv[0]}"
        else:
            what = "set up the command"
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        os.write(2, f"iii: {what}: {reason}\n".encode())
    finally:
        os._exit(code)


def main(argv: list[str]) -> int:
    """Entry point: the spec as the one argument (stdin is the command's)."""
    if len(argv) != 1:
        print("usage: python -m vmm_ffi.exec.enter SPEC-JSON", file=sys.stderr)
        return 2
    try:
        spec = msgspec.json.decode(argv[0], type=EnterSpec)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        print(f"error: invalid enter spec: {exc}", file=sys.stderr)
        return 2
    sc.load()
    return run(spec)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
