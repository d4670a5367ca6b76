"""``python -m vmm_ffi.launcher [SPEC.json]``: one process per sandbox (params on stdin if no arg).

1. Read and validate ``LaunchParams`` (one clear line on stderr and exit 2 when invalid).
2. Apply memory/cpu/pids limits: cgroup v2 when delegated, v1 as root (else log "not
   enforced: <reason>").
3. Enter a user + mount namespace (plus pid, uts, ipc for the namespace backend) and mount the
   root at ``merged``.
4. Fork the sandbox: the namespace backend's init (PID 1, see ``sandbox_init``), or the libkrun
   VMM process that configures libkrun and calls ``krun_start_enter``. The child gets
   PDEATHSIG=SIGKILL, so a SIGKILL of the launcher takes every sandbox process with it.
5. Once the sandbox is built, print one ``LaunchResult`` line and close stdout.
6. Forward SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to the sandbox, wait for it, write
   ``exit.json`` atomically and exit with the workload's code (128+N when killed by signal N).
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
from typing import Literal

import msgspec

from vmm_ffi import namespace as ns
from vmm_ffi import seccomp, userns
from vmm_ffi import syscalls as sc
from vmm_ffi.cgroup_leaf import CgroupPlan, move_to_origins, remove_leaf
from vmm_ffi.cgroups import CGROUP_ROOT, CGROUP_ROOT_ENV, apply_limits, oom_kills, oom_message
from vmm_ffi.errors import AlreadyRunning, InvalidParams, LauncherError, SetupFailed
from vmm_ffi.exit_recorder import ExitRecorder
from vmm_ffi.idmap import present_root
from vmm_ffi.loopback import bring_up_loopback
from vmm_ffi.network import (
    PASTA_HINT,
    SLIRP_LOG,
    NetworkHelper,
    find_pasta,
    find_slirp4netns,
)
from vmm_ffi.params import (
    EXIT_ALREADY_RUNNING,
    EXIT_INVALID_PARAMS,
    EXIT_SETUP_FAILED,
    PROTOCOL_VERSION,
    DirectoryRoot,
    ExitStatus,
    IdShift,
    LaunchParams,
    LaunchResult,
    OverlayRoot,
    RootSpec,
    decode_params,
    encode,
)
from vmm_ffi.sandbox_init import FORWARDED_SIGNALS, exit_code_of, run_init
from vmm_ffi.statefiles import write_atomic

LOG_PREFIX = "[iii-launcher]"
LOCK_NAME = "launcher.lock"
MAX_INHERITED_FD = 1 << 20  # closerange uses close_range(2): the bound costs nothing


def load_params(argv: list[str]) -> LaunchParams:
    """Params from the file named in argv, or stdin; raises ``InvalidParams`` (one line)."""
    source = argv[0] if argv else "<stdin>"
    try:
        if argv:
            with open(argv[0], "rb") as f:
                raw = f.read()
        else:
            raw = sys.stdin.buffer.read()
    except OSError as exc:
        raise InvalidParams(f"cannot read launch params {source}: {exc.strerror}") from exc
    try:
        params = decode_params(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidParams(f"invalid launch params in {source}: {exc}") from exc
    check_params(params)
    return params


def lock_state_dir(params: LaunchParams) -> int:
    """Hold ``<state dir>/launcher.lock`` for the sandbox's life: one launcher per sandbox.

    The lock is an flock on an fd the sandbox child inherits (and the workload does not: it is
    close-on-exec), so it is released exactly when the last launcher-side process is gone.
    """
    path = os.path.join(os.path.dirname(params.exit_path), LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise AlreadyRunning(f"sandbox {params.name} is already running (launcher pid "
                             f"{holder} holds {path})", EXIT_ALREADY_RUNNING) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def check_params(params: LaunchParams) -> None:
    """The meaning checks msgspec cannot do: paths exist, strings are exec-safe."""
    def need_dir(path: str, field: str) -> None:
        if not os.path.isdir(path):
            raise InvalidParams(f"invalid launch params: {field} {path!r} is not a directory")
    if not sys.platform.startswith("linux"):
        if params.backend == "namespace":
            raise InvalidParams("invalid launch params: backend 'namespace' needs Linux")
        if not isinstance(params.rootfs, DirectoryRoot):
            raise InvalidParams("invalid launch params: rootfs 'overlay' needs Linux; use a "
                                "'directory' root (a clonefile copy) on macOS")
    if isinstance(params.rootfs, OverlayRoot):
        for i, lower in enumerate(params.rootfs.lower):
            need_dir(lower, f"rootfs.lower[{i}]")
    elif isinstance(params.rootfs, DirectoryRoot):
        need_dir(params.rootfs.path, "rootfs.path")
    need_dir(params.merged, "merged")
    need_dir(os.path.dirname(params.log_path), "log_path's directory")
    need_dir(os.path.dirname(params.exit_path), "exit_path's directory")
    if not params.argv[0]:
        raise InvalidParams("invalid launch params: argv[0] is empty")
    for key, value in params.env.items():
        if not key or "=" in key or "\0" in key + value:
            raise InvalidParams(f"invalid launch params: env key {key!r} (must be non-empty, "
                                "without '=' or NUL)")
    if any("\0" in a for a in params.argv):
        raise InvalidParams("invalid launch params: argv contains a NUL byte")
    for bind in params.binds:
        if not os.path.exists(bind.source):
            raise InvalidParams(f"invalid launch params: bind source {bind.source!r} missing")


class Launcher:
    """The host-side parent of one sandbox: sets it up, forwards signals, records the exit."""

    def __init__(self, params: LaunchParams) -> None:
        self.params = params
        self.log_fd = os.open(params.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                              | os.O_CLOEXEC, 0o640)
        self.child = 0
        self.cgroup = CgroupPlan(note="not enforced: not set up")
        self.network: NetworkHelper | None = None
        self.recorder: ExitRecorder | None = None
        self.id_map = describe_id_map(params, os.geteuid(), os.getegid())  # before any unshare

    def log(self, message: str) -> None:
        """A launcher line in the worker log (and on stderr when that is somewhere else)."""
        line = f"{LOG_PREFIX} {message}\n".encode()
        os.write(self.log_fd, line)
        try:
            err, log = os.fstat(2), os.fstat(self.log_fd)
            if (err.st_dev, err.st_ino) != (log.st_dev, log.st_ino):
                os.write(2, line)
        except OSError:
            pass

    def record_exit(self, status: ExitStatus) -> None:
        if self.recorder is not None:  # we run on shifted ids: the host-side helper writes it
            recorder, self.recorder = self.recorder, None
            if not recorder.record(status):
                self.log(f"cannot record the exit status in {self.params.exit_path}")
            return
        try:
            write_atomic(self.params.exit_path, encode(status) + b"\n")
        except OSError as exc:  # a full disk: the daemon still has our exit code
            try:
                self.log(f"cannot record the exit status in {self.params.exit_path}: {exc}")
            except OSError:
                pass

    def fail_setup(self, message: str) -> int:
        self.log(f"sandbox setup failed: {message}")
        self.record_exit(ExitStatus(exit_code=EXIT_SETUP_FAILED, finished_at=time.time(),
                                    error=message))
        self.stop_network()
        remove_leaf(self.cgroup)
        return EXIT_SETUP_FAILED

    def run(self) -> int:
        p = self.params
        if p.backend == "host":  # a Binary worker: a host process, no sandbox limits
            self.cgroup = CgroupPlan(note="not enforced: host process")
        elif p.backend == "libkrun":  # the VM itself has exactly cpus vCPUs and memory_mib RAM
            self.cgroup = CgroupPlan(note="enforced")
        else:
            # CGROUP_ROOT_ENV moves the hierarchies elsewhere: the bench points it at an empty
            # directory to time a start without limits beside one with them.
            root = os.environ.get(CGROUP_ROOT_ENV) or CGROUP_ROOT
            self.cgroup = apply_limits(p.name, p.cpus, p.memory_mib, p.cgroup, root=root,
                                       pids_max=p.pids_max)
        if self.cgroup.path is None and self.cgroup.note != "enforced" and p.backend != "host":
            self.log(f"resource limits (cpus={p.cpus}, memory={p.memory_mib} MiB) "
                     f"{self.cgroup.note}")
        filtered = p.seccomp and p.backend == "namespace"
        try:
            if filtered:
                seccomp.load()  # before fork: the init inherits the library, or we fail here
            root_mode, vm_root = self._build_root()
            p = self.params  # with an id shift, paths are now relative to the state dir
        except SetupFailed as exc:
            return self.fail_setup(str(exc))
        # No pids cgroup (a non-root launcher on v1): RLIMIT_NPROC in the init stops fork bombs.
        nproc = p.pids_max if p.backend == "namespace" and self.cgroup.version == 0 else None
        status_r, status_w = os.pipe()
        alive_r, alive_w = os.pipe()
        go_r, go_w = os.pipe()
        # Blocked across the fork until each side has its forwarding handler: a namespace's
        # init silently drops signals it has no handler for, but keeps blocked ones pending.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        child = os.fork()
        if child == 0:
            os.close(status_r)
            os.close(alive_w)
            os.close(go_w)
            if p.backend in ("namespace", "host"):
                run_init(p, status_w, alive_r, go_r, self.log_fd,
                         None if self.network is None else self.network.in_init, nproc)
            from vmm_ffi.krun_vmm import run_vmm
            run_vmm(p, vm_root, status_w, alive_r, go_r, self.log_fd)
        self.child = child
        for fd in (status_w, alive_r, go_r):
            os.close(fd)
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, self._forward)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
        os.write(go_w, b"1")
        os.close(go_w)
        status_file = os.fdopen(status_r, "rb")
        first = _read_message(status_file)
        if not first.get("ready"):
            _, wait_status = os.waitpid(child, 0)
            message = str(first.get("error") or
                          f"sandbox process exited early (code {exit_code_of(wait_status)})")
            return self.fail_setup(message)
        network: Literal["host", "pasta", "slirp4netns", "tsi", "none"] = "tsi" \
            if p.backend == "libkrun" else self.network.mode if self.network else \
            "none" if p.network == "none" and p.backend == "namespace" else "host"
        result = LaunchResult(version=PROTOCOL_VERSION, pid=os.getpid(), backend=p.backend,
                              sandbox_pid=child, started_at=time.time(), root_mode=root_mode,
                              limits=self.cgroup.note if nproc is None else
                              f"{self.cgroup.note} (processes: capped at {nproc} per sandbox "
                              "uid by RLIMIT_NPROC)", network=network,
                              id_map=self.id_map,
                              seccomp=seccomp.FILTER_NAME if filtered else None)
        self._answer(result)
        _, wait_status = os.waitpid(child, 0)
        last = _read_message(status_file)
        status = self._exit_status(wait_status, last)
        if oom_kills(self.cgroup):  # read before the leaf goes; exit.json outlives the daemon
            oom = oom_message(p.memory_mib)
            status = msgspec.structs.replace(
                status, error=oom if not status.error else f"{oom}; {status.error}")
        self.stop_network()
        self.record_exit(status)
        remove_leaf(self.cgroup)
        how = f"killed by signal {status.signal}, " if status.signal else ""
        self.log(f"sandbox {p.name} ended: {how}exit code {status.exit_code}"
                 + (f" ({status.error})" if status.error else ""))
        return status.exit_code

    def _build_root(self) -> tuple[Literal["overlay", "directory"], str]:
        """Namespaces + the root at ``merged``; returns (root mode, root path for libkrun)."""
        p = self.params
        if p.backend == "host":  # the host's own root, as it is
            return "directory", "/"
        if sys.platform == "darwin":  # no namespaces: libkrun gets the (cloned) directory
            assert isinstance(p.rootfs, DirectoryRoot)
            return "directory", p.rootfs.path
        flags = ns.NAMESPACE_FLAGS if p.backend == "namespace" \
            else sc.CLONE_NEWUSER | sc.CLONE_NEWNS
        if p.backend == "namespace" and p.network == "pasta":
            pasta = p.pasta or find_pasta()
            if pasta is None:
                raise SetupFailed("network", f"pasta is not installed; {PASTA_HINT}")
            self.network = NetworkHelper.fork(pasta, self.log_fd)  # in the host's namespaces
            flags |= sc.CLONE_NEWNET
        elif p.backend == "namespace" and p.network == "slirp4netns":
            slirp = p.slirp4netns or find_slirp4netns()
            if slirp is None:
                raise SetupFailed("network", f"slirp4netns is not installed; {PASTA_HINT}")
            # its chatter (tapfd, a warning about the host loopback we rely on) stays out of
            # the worker log: errors are named from this file
            helper_log = os.path.join(os.path.dirname(p.exit_path), SLIRP_LOG)
            log_fd = os.open(helper_log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                             0o640)
            try:
                self.network = NetworkHelper.fork(slirp, log_fd, mode="slirp4netns",
                                                  log_path=helper_log)
            finally:
                os.close(log_fd)
            flags |= sc.CLONE_NEWNET
        elif p.backend == "namespace" and p.network == "none":
            flags |= sc.CLONE_NEWNET  # loopback only, brought up below
        root = None
        if p.id_shift is not None:
            root = self._present_shifted_root(p.id_shift)
            p = self.params
        userns.unshare_with_id_map(flags, p.id_shift)
        if p.backend == "namespace" and p.network == "none":
            try:
                bring_up_loopback()
            except OSError as exc:
                raise SetupFailed("network", f"bring up loopback: {exc.strerror}") from exc
        if self.network is not None:
            self.network.attach()  # pasta configures the interface while we build the root
        mode = ns.mount_root(p, root)
        if self.network is not None:
            self.network.wait_ready()
        return mode, p.merged

    def _present_shifted_root(self, shift: IdShift) -> RootSpec:
        """While still host root: a mount namespace of our own with the root's directories
        idmapped (``vmm_ffi.idmap``), the exit recorder, and the state dir as cwd, since the
        shifted ids cannot walk the private parents of ``$III_HOME``."""
        if os.geteuid() != 0 or self.params.backend != "namespace":
            raise SetupFailed("id map", "id_shift needs a root launcher and the namespace "
                              "backend")
        try:
            sc.unshare(sc.CLONE_NEWNS)
        except OSError as exc:
            raise SetupFailed("unshare mount namespace", str(exc)) from exc
        ns.make_mounts_private()
        state = os.path.dirname(self.params.exit_path)
        os.chdir(state)
        presented = present_root(self.params, shift)
        root = presented.root
        if presented.fallback is not None:
            self.id_map = f"{self.id_map} ({presented.fallback})"
            self.log(f"id map: {presented.fallback}")
        self.params = msgspec.structs.replace(
            self.params, merged=os.path.relpath(self.params.merged, state))
        cgroup = self.cgroup
        launcher = os.getpid()

        def cleanup() -> None:  # in the recorder, as host root: we may not move ourselves
            move_to_origins(cgroup, launcher)
            remove_leaf(cgroup)
        self.recorder = ExitRecorder.fork(self.params.exit_path, cleanup)
        return root

    def stop_network(self) -> None:
        """End the sandbox's pasta or slirp4netns (the namespace it served is gone or going)."""
        if self.network is not None:
            self.network.stop()
            self.network = None

    def _answer(self, result: LaunchResult) -> None:
        try:
            os.write(1, encode(result) + b"\n")
        except OSError:
            pass  # the daemon went away; the sandbox still runs and records its exit
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)

    def _forward(self, signum: int, _frame: object) -> None:
        if self.child:
            try:
                os.kill(self.child, signum)
            except ProcessLookupError:
                pass

    def _exit_status(self, child_status: int, last: dict[str, object]) -> ExitStatus:
        now = time.time()
        raw = last.get("status")
        status = raw if isinstance(raw, int) else child_status
        error = last.get("error") or last.get("exec_error")
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            return ExitStatus(exit_code=128 + sig, signal=sig, finished_at=now,
                              error=str(error) if error else None)
        return ExitStatus(exit_code=os.WEXITSTATUS(status), finished_at=now,
                          error=str(error) if error else None)


def describe_id_map(params: LaunchParams, uid: int, gid: int) -> str:
    """Sandbox ids -> host ids for a launcher started as ``uid``, as ``inspect`` shows them."""
    if params.backend == "host":
        return "none (a host process)"
    if params.backend == "libkrun":
        return "the VM's own"
    if params.id_shift is not None:
        u, g = params.id_shift.uid_base, params.id_shift.gid_base
        gids = "" if g == u else f" (gids -> {g}-{g + userns.ROOT_ID_RANGE - 1})"
        return f"0-{userns.ROOT_ID_RANGE - 1} -> {u}-{u + userns.ROOT_ID_RANGE - 1}{gids}"
    if uid == 0:
        return f"0-{userns.ROOT_ID_RANGE - 1} -> 0-{userns.ROOT_ID_RANGE - 1} (host ids)"
    wide = userns.user_maps(uid, gid)
    if wide is None:
        return f"0 -> {uid}"
    return f"0 -> {uid}, 1-{wide.count} -> {wide.uid_start}-{wide.uid_start + wide.count - 1}"


def _read_message(stream: object) -> dict[str, object]:
    line = stream.readline()  # type: ignore[attr-defined]
    if not line:
        return {}
    try:
        value = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    # Whatever the spawner let us inherit (a daemon's socket-activation fd, say) must not reach
    # the workload: exec keeps every fd that is not close-on-exec.
    os.closerange(3, MAX_INHERITED_FD)
    args = sys.argv[1:] if argv is None else argv
    try:
        params = load_params(args)
    except InvalidParams as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID_PARAMS
    if not args:  # params came on stdin; the sandbox must not inherit it
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    sc.set_process_name("iii-launcher")
    try:
        lock_state_dir(params)
    except AlreadyRunning as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    try:  # an exit.json from an earlier run must not be mistaken for this one's
        os.unlink(params.exit_path)
    except FileNotFoundError:
        pass
    try:
        return Launcher(params).run()
    except LauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SETUP_FAILED


if __name__ == "__main__":
    sys.exit(main())
