"""``python -m vmm_ffi.launcher [SPEC.json]``: one process per sandbox (params on stdin if no arg).

1. Read and validate ``LaunchParams`` (one clear line on stderr and exit 2 when invalid).
2. Apply memory/cpu/pids limits: cgroup v2 when delegated, v1 as root (else log "not
   enforced: <reason>").
3. Enter a user + mount namespace (plus pid, uts, ipc for the namespace backend) and mount the
   root at ``merged``.
4. Fork the sandbox: the namespace backend's init (PID 1, see ``isolation.sandbox_init``), or
   the libkrun VMM process that configures libkrun and calls ``krun_start_enter``. The child gets
   PDEATHSIG=SIGKILL, so a SIGKILL of the launcher takes every sandbox process with it.
5. Once the sandbox is built, print one ``LaunchResult`` line and close stdout.
6. Forward SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to the sandbox, wait for it, write
   ``exit.json`` atomically and exit with the workload's code (128+N when killed by signal N).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import IO, TYPE_CHECKING, Literal

import msgspec

from vmm_ffi import syscalls as sc
from vmm_ffi.cgroups.leaf import CgroupPlan, move_to_origins, remove_leaf
from vmm_ffi.cgroups.limits import (
    CGROUP_ROOT,
    CGROUP_ROOT_ENV,
    apply_limits,
    oom_kills,
    oom_message,
)
from vmm_ffi.errors import AlreadyRunning, InvalidParams, LauncherError, SetupFailed
from vmm_ffi.isolation import namespace as ns
from vmm_ffi.isolation import seccomp, userns
from vmm_ffi.isolation.idmap import present_root
from vmm_ffi.launcher.exit_status import exit_status, read_message, with_cause, write_exit
from vmm_ffi.launcher.startup import load_params, lock_state_dir
from vmm_ffi.network.sandbox import SandboxNetwork

if TYPE_CHECKING:
    from vmm_ffi.launcher.exit_recorder import ExitRecorder
from vmm_ffi.isolation.sandbox_init import FORWARDED_SIGNALS, exit_code_of, run_init
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
    RootSpec,
    encode,
)

LOG_PREFIX = "[iii-launcher]"
MAX_INHERITED_FD = 1 << 20  # closerange uses close_range(2): the bound costs nothing
RootMode = Literal["overlay", "directory"]


class Launcher:
    """The host-side parent of one sandbox: sets it up, forwards signals, records the exit."""

    def __init__(self, params: LaunchParams) -> None:
        self.params = params
        self.log_fd = os.open(params.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                              | os.O_CLOEXEC, 0o640)
        self.child = 0
        self.cgroup = CgroupPlan(note="not enforced: not set up")
        self.network: SandboxNetwork | None = None  # an own network namespace's
        self.recorder: ExitRecorder | None = None
        self.id_map = userns.describe_id_map(params, os.geteuid(), os.getegid())  # pre-unshare

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
        write_exit(self.params.exit_path, status, self.log)

    def fail_setup(self, message: str) -> int:
        self.log(f"sandbox setup failed: {message}")
        self.record_exit(ExitStatus(exit_code=EXIT_SETUP_FAILED, finished_at=time.time(),
                                    error=message))
        self.stop_network()
        remove_leaf(self.cgroup)
        return EXIT_SETUP_FAILED

    def run(self) -> int:
        """The sandbox's life: limits, root, fork, answer the daemon, wait, record the end."""
        self._apply_limits()
        filtered = self.params.seccomp and self.params.backend == "namespace"
        try:
            if filtered:
                seccomp.load()  # before fork: the init inherits the library, or we fail here
            root_mode, vm_root = self._build_root()
        except SetupFailed as exc:
            return self.fail_setup(str(exc))
        nproc = self._nproc_cap()
        status_file = self._fork_sandbox(vm_root, nproc)
        first = read_message(status_file)
        if not first.get("ready"):
            return self._failed_start(first)
        self._answer(self._launch_result(root_mode, nproc, filtered))
        return self._finish(self._wait_sandbox(status_file))

    def _apply_limits(self) -> None:
        """The cgroup plan of the backend: enforced by us, by the VM, or not at all."""
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

    def _nproc_cap(self) -> int | None:
        """No pids cgroup (a non-root launcher on v1): RLIMIT_NPROC in the init stops fork
        bombs."""
        p = self.params
        return p.pids_max if p.backend == "namespace" and self.cgroup.version == 0 else None

    def _fork_sandbox(self, vm_root: str, nproc: int | None) -> IO[bytes]:
        """Fork the sandbox process, forward signals to it, let it go; returns the pipe it
        reports on (its first message: ready or why not; its last: how the workload ended)."""
        status_r, status_w = os.pipe()
        alive_r, alive_w = os.pipe()  # alive_w stays open: its EOF tells the child we are gone
        go_r, go_w = os.pipe()
        # Blocked across the fork until each side has its forwarding handler: a namespace's
        # init silently drops signals it has no handler for, but keeps blocked ones pending.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        child = os.fork()
        if child == 0:
            os.close(status_r)
            os.close(alive_w)
            os.close(go_w)
            self._become_sandbox(vm_root, nproc, status_w, alive_r, go_r)
        self.child = child
        for fd in (status_w, alive_r, go_r):
            os.close(fd)
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, self._forward)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
        os.write(go_w, b"1")
        os.close(go_w)
        return os.fdopen(status_r, "rb")

    def _become_sandbox(self, vm_root: str, nproc: int | None, status_w: int, alive_r: int,
                        go_r: int) -> None:
        """In the forked child: the namespace backend's init, or the libkrun VMM (neither
        returns)."""
        p = self.params
        if p.backend in ("namespace", "host"):
            run_init(p, status_w, alive_r, go_r, self.log_fd,
                     None if self.network is None else self.network.configure_in_init,
                     nproc)
        from vmm_ffi.libkrun.vmm import run_vmm
        run_vmm(p, vm_root, status_w, alive_r, go_r, self.log_fd)

    def _failed_start(self, first: dict[str, object]) -> int:
        """The sandbox process did not get ready: reap it and record why."""
        _, wait_status = os.waitpid(self.child, 0)
        message = str(first.get("error") or
                      f"sandbox process exited early (code {exit_code_of(wait_status)})")
        return self.fail_setup(message)

    def _launch_result(self, root_mode: RootMode, nproc: int | None,
                       filtered: bool) -> LaunchResult:
        """The one line the daemon waits for: what was built, and how it is confined."""
        p = self.params
        network: Literal["host", "none", "pasta", "slirp4netns", "bridge", "tsi"] = \
            "tsi" if p.backend == "libkrun" else \
            "host" if self.network is None else self.network.mode
        policy = "" if self.network is None else self.network.describe()
        limits = self.cgroup.note if nproc is None else \
            f"{self.cgroup.note} (processes: capped at {nproc} per sandbox uid by RLIMIT_NPROC)"
        return LaunchResult(version=PROTOCOL_VERSION, pid=os.getpid(), backend=p.backend,
                            sandbox_pid=self.child, started_at=time.time(),
                            root_mode=root_mode, limits=limits, network=network,
                            policy=policy, id_map=self.id_map,
                            seccomp=seccomp.FILTER_NAME if filtered else None)

    def _wait_sandbox(self, status_file: IO[bytes]) -> ExitStatus:
        """Wait for the sandbox to end; its status, with why a helper ended or the OOM killer
        struck in front of its error."""
        wait_status = os.waitpid(self.child, 0)[1] if self.network is None \
            else self.network.wait_sandbox(self.child, self.log)
        status = exit_status(wait_status, read_message(status_file))
        if self.network is not None:
            status = with_cause(status, self.network.helper_ended)
        if oom_kills(self.cgroup):  # read before the leaf goes; exit.json outlives the daemon
            status = with_cause(status, oom_message(self.params.memory_mib))
        return status

    def _finish(self, status: ExitStatus) -> int:
        """Tear down what the sandbox used, record its end; returns the workload's code."""
        self.stop_network()
        self.record_exit(status)
        remove_leaf(self.cgroup)
        how = f"killed by signal {status.signal}, " if status.signal else ""
        self.log(f"sandbox {self.params.name} ended: {how}exit code {status.exit_code}"
                 + (f" ({status.error})" if status.error else ""))
        return status.exit_code

    def _build_root(self) -> tuple[RootMode, str]:
        """Namespaces + the root at ``merged``; returns (root mode, root path for libkrun)."""
        p = self.params
        if p.backend == "host":  # the host's own root, as it is
            return "directory", "/"
        if sys.platform == "darwin":  # no namespaces: libkrun gets the (cloned) directory
            assert isinstance(p.rootfs, DirectoryRoot)
            return "directory", p.rootfs.path
        flags = ns.NAMESPACE_FLAGS if p.backend == "namespace" \
            else sc.CLONE_NEWUSER | sc.CLONE_NEWNS
        # reads the host's addresses and forks the helper: before we leave its namespaces
        self.network = SandboxNetwork.plan(p, self.log_fd)
        if self.network is not None:
            flags |= sc.CLONE_NEWNET
        root = None
        if p.id_shift is not None:
            root = self._present_shifted_root(p.id_shift)
            p = self.params
        userns.unshare_with_id_map(flags, p.id_shift)
        if self.network is not None:
            self.network.after_unshare()  # the interface is set up while we build the root
        mode = ns.mount_root(p, root)
        if self.network is not None:
            self.network.ready()
        return mode, p.merged

    def _present_shifted_root(self, shift: IdShift) -> RootSpec:
        """While still host root: a mount namespace of our own with the root's directories
        idmapped (``vmm_ffi.isolation.idmap``), the exit recorder, and the state dir as cwd,
        since the shifted ids cannot walk the private parents of ``$III_HOME``."""
        if os.geteuid() != 0 or self.params.backend != "namespace":
            raise SetupFailed("id map", "id_shift needs a root launcher and the namespace "
                              "backend")
        # Imported here, still as host root with the host's files: only an id-shifted launcher
        # needs them, and every module imported at start costs each launcher's start.
        from vmm_ffi.launcher.exit_recorder import ExitRecorder
        from vmm_ffi.network.bridge_leases import release as release_bridge
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

        bridge = None if self.network is None else self.network.bridge_params

        def cleanup() -> None:  # in the recorder, as host root: we may not move ourselves
            move_to_origins(cgroup, launcher)
            remove_leaf(cgroup)
            if bridge is not None:  # the veth went with the namespace; the lease goes here
                try:
                    release_bridge(bridge, launcher)
                except OSError as exc:
                    os.write(2, f"{LOG_PREFIX} bridge release: {exc}\n".encode())
        self.recorder = ExitRecorder.fork(self.params.exit_path, cleanup)
        return root

    def stop_network(self) -> None:
        """End the sandbox's pasta or slirp4netns (the namespace it served is gone or going)."""
        if self.network is not None:
            self.network.stop()

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

