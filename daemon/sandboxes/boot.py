"""The boot sequence: provision, sync the project, place trust files, setup/install, start.

``prepare`` does everything up to (not including) ``start``; ``start_params`` turns its result
into the launcher params of the long-running worker; ``boot_sandbox`` does both under one lock and hands
back the running ``SandboxTask``. Setup and install run as one-shot launcher runs (same root,
same env, same backend as the worker), their output goes to ``logs/worker.log``.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import msgspec

from daemon.errors import Conflict, ScriptFailed
from daemon.sandboxes.beneath import read_file_beneath, write_file_beneath
from daemon.sandboxes.env import build_sandbox_env, place_host_files
from daemon.sandboxes.fingerprint import (
    Fingerprint,
    Marker,
    compute_fingerprint,
    decode_marker,
    encode_marker,
    explain_change,
)
from daemon.sandboxes.layout import MARKER_RELPATH, SandboxLayout
from daemon.sandboxes.provision import Provisioner, RootSpec
from daemon.sandboxes.sync import SyncStats, sync_project
from daemon.sandboxes.task import SandboxTask, sandbox_lock
from vmm_ffi.params import (
    Backend,
    BridgeParams,
    ExitStatus,
    IdShift,
    LaunchParams,
    NetworkPolicy,
    RunAs,
)

SCRIPT_TIMEOUT_S = 3600.0  # one setup or install run, end to end
SCRIPT_STOP_TIMEOUT_S = 3.0  # a timed-out script: SIGTERM, then SIGKILL after this
OUTPUT_TAIL_LINES = 20
WORKSPACE = "/workspace"
_LAUNCHER_PREFIX = "[iii-launcher]"
T = TypeVar("T")

class BootPhase(enum.Enum):
    """The steps of a sandbox boot, in order; the daemon maps each one to a worker state and a
    client progress phase in one table (``daemon.workers.supervision.state.BOOT_PHASES``)."""

    PROVISION = "provision"  # the sandbox root is made (overlay, reflink or copy)
    SYNC = "sync"  # the project is copied into /workspace
    UP_TO_DATE = "up-to-date"  # the dependency marker matches: setup and install are skipped
    SETUP = "setup"  # the manifest's setup script, first start only
    INSTALL = "install"  # the install script
    START = "start"  # the worker process is launched


Progress = Callable[[BootPhase, str], None]  # (phase, message for a person)


class BootSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What one sandbox boot needs, already resolved by the daemon.

    ``project`` None means a container worker (nothing synced into /workspace). ``ca_bundle`` is
    the host bundle to place (``env.resolve_ca_bundle`` of the daemon setting), None = none.
    ``start`` is a shell script; ``argv`` (when set) is exec'd instead (an image's
    entrypoint+cmd).
    """

    name: str
    image_rootfs: str
    image_ref: str = ""  # for messages: the image a missing command was looked for in
    image_env: list[str] = []
    project: str | None = None
    setup: str = ""
    install: str = ""
    start: str = ""
    argv: list[str] | None = None
    workdir: str = WORKSPACE
    manifest_env: dict[str, str] = {}
    config_env: dict[str, str] = {}
    engine_url: str = "ws://127.0.0.1:49134"
    backend: Backend = "namespace"
    cpus: int = 2
    memory_mib: int = 2048
    ca_bundle: str | None = None
    script_timeout_s: float = SCRIPT_TIMEOUT_S
    network: Literal["host", "none", "pasta", "slirp4netns", "bridge"] = "host"
    policy: NetworkPolicy = NetworkPolicy()
    bridge: BridgeParams | None = None
    pasta: str | None = None
    slirp4netns: str | None = None
    id_shift: IdShift | None = None
    user: RunAs | None = None  # the worker process's user (a container image's USER)


@dataclass
class Prepared:
    """The outcome of ``prepare``: the root for the launcher, the env, and what ran and why."""

    root: RootSpec
    env: dict[str, str]
    ran_setup: bool
    ran_install: bool
    reason: str | None  # why install ran ("first start", "requirements.txt changed"), else None
    sync: SyncStats | None


def _note(progress: Progress | None, phase: BootPhase, message: str) -> None:
    if progress is not None:
        progress(phase, message)


async def _blocking(fn: Callable[..., T], *args: object) -> T:
    """``asyncio.to_thread`` for a step that writes the sandbox: cancelled (a stop wins), it
    waits for the thread to finish before re-raising, so no write lands after the sandbox lock
    is released and the next start sees a finished step or none."""
    step = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(step)
    except asyncio.CancelledError:
        await asyncio.wait({step})
        raise


def _fingerprint(boot: BootSpec) -> Fingerprint:
    if boot.project is None:
        return Fingerprint(setup=_digest(boot.setup), install=_digest(boot.install), files={})
    return compute_fingerprint(Path(boot.project), boot.setup, boot.install)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def prepare(layout: SandboxLayout, boot: BootSpec, provisioner: Provisioner,
                  progress: Progress | None = None, *, locked: bool = False) -> Prepared:
    """Provision, sync, place trust files, then setup/install as the marker says.

    Raises ``ScriptFailed(script, exit_code, last 20 output lines)`` when setup or install fails
    (no marker is written, so the next prepare retries), ``InvalidProject`` for an unreadable
    project, ``Conflict`` when another start of this sandbox is in progress.
    """
    if not locked:
        with sandbox_lock(layout):
            return await prepare(layout, boot, provisioner, progress, locked=True)
    await _refuse_if_running(layout)
    root = await _provision(layout, boot, provisioner, progress)
    writable = layout.writable_root()
    stats = await _sync(layout, boot, progress)
    env = await _place_host_files_and_env(writable, boot)
    fp = await asyncio.to_thread(_fingerprint, boot)
    marker = decode_marker(await asyncio.to_thread(read_file_beneath, writable, MARKER_RELPATH))
    prepared = Prepared(root=root, env=env, ran_setup=False, ran_install=False, reason=None,
                        sync=stats)
    if marker is not None and marker.fingerprint == fp.digest:
        _note(progress, BootPhase.UP_TO_DATE, "dependencies up to date; skipping setup and install")
        return prepared
    await _run_scripts(layout, boot, prepared, marker, fp, progress)
    await _blocking(write_file_beneath, writable, MARKER_RELPATH, encode_marker(fp))
    return prepared


async def _refuse_if_running(layout: SandboxLayout) -> None:
    running = await asyncio.to_thread(SandboxTask.reattach, layout)
    if running is not None:
        running.close()
        raise Conflict(f"sandbox {layout.name!r} is running (launcher pid {running.pid}); "
                       "stop it before preparing it again")


async def _provision(layout: SandboxLayout, boot: BootSpec, provisioner: Provisioner,
                     progress: Progress | None) -> RootSpec:
    mode = await asyncio.to_thread(lambda: layout.mode() or provisioner.decision().mode)
    _note(progress, BootPhase.PROVISION, f"provisioning the sandbox root ({mode.value})")
    return await _blocking(provisioner.provision, layout, Path(boot.image_rootfs))


async def _sync(layout: SandboxLayout, boot: BootSpec,
                progress: Progress | None) -> SyncStats | None:
    """Copy the project into the workspace (an image-only worker has none)."""
    if boot.project is None:
        return None
    _note(progress, BootPhase.SYNC, f"syncing {boot.project} into {WORKSPACE}")
    return await _blocking(sync_project, Path(boot.project), layout.workspace, layout.sync_state)


async def _place_host_files_and_env(writable: Path, boot: BootSpec) -> dict[str, str]:
    """Place the CA bundle (and other host files) in the root; the env then points at them."""
    ca = None if boot.ca_bundle is None else Path(boot.ca_bundle)
    ca_placed = await _blocking(place_host_files, writable, ca)
    return build_sandbox_env(boot.image_env, boot.manifest_env, boot.config_env, boot.engine_url,
                             boot.name, boot.backend, ca_placed)


async def _run_scripts(layout: SandboxLayout, boot: BootSpec, prepared: Prepared,
                       marker: Marker | None, fp: Fingerprint, progress: Progress | None) -> None:
    """Setup on the first start, install whenever its inputs changed; ``prepared`` records it."""
    root, env = prepared.root, prepared.env
    if marker is None:
        prepared.reason = "first start"
        if boot.setup.strip():
            _note(progress, BootPhase.SETUP, "running setup (first start)")
            await run_script(layout, boot, root, env, "setup", boot.setup)
            prepared.ran_setup = True
    else:
        prepared.reason = explain_change(marker.parts, fp)
    if boot.install.strip():
        _note(progress, BootPhase.INSTALL, f"running install ({prepared.reason})")
        await run_script(layout, boot, root, env, "install", boot.install)
        prepared.ran_install = True
    if prepared.ran_setup or prepared.ran_install:
        await check_scripts_left_a_runnable_sandbox(
            layout, boot, root, env, "install" if prepared.ran_install else "setup")


async def check_scripts_left_a_runnable_sandbox(layout: SandboxLayout, boot: BootSpec,
                                                root: RootSpec, env: dict[str, str],
                                                script_name: str) -> None:
    """After setup/install: the project copy and ``/bin/sh`` must still be there, or every
    later start would fail the same way; raise ``ScriptFailed`` naming the script instead."""
    if boot.project is not None and not await asyncio.to_thread(layout.workspace.is_dir):
        raise ScriptFailed(script_name, 0, [], problem=(
            f"deleted {WORKSPACE}, the project copy the worker starts in; fix the script "
            "(install into a subdirectory), then start the worker again"))
    if boot.argv:
        return  # an image's own entrypoint: no shell involved
    await run_script(layout, boot, root, env, script_name, ":", announce=False)


def launch_params(layout: SandboxLayout, boot: BootSpec, root: RootSpec, env: dict[str, str],
                  argv: list[str], workdir: str, user: RunAs | None = None) -> LaunchParams:
    """Launcher params for a run in this sandbox (paths filled in from the layout); ``user``
    None runs it as sandbox root (setup and install do)."""
    return LaunchParams(name=boot.name, backend=boot.backend, rootfs=root,
                        merged=str(layout.merged), argv=argv, env=env, workdir=workdir,
                        cpus=boot.cpus, memory_mib=boot.memory_mib,
                        log_path=str(layout.worker_log), exit_path=str(layout.exit_file),
                        hostname=boot.name[:63], network=boot.network, policy=boot.policy,
                        bridge=boot.bridge,
                        pasta=boot.pasta,
                        slirp4netns=boot.slirp4netns,
                        id_shift=boot.id_shift, user=user)


def start_params(layout: SandboxLayout, boot: BootSpec, prepared: Prepared) -> LaunchParams:
    """Launcher params of the long-running worker: ``argv`` if set, else ``sh -c start``."""
    argv = boot.argv if boot.argv else ["/bin/sh", "-c", boot.start]
    return launch_params(layout, boot, prepared.root, prepared.env, argv, boot.workdir,
                         boot.user)


async def boot_sandbox(layout: SandboxLayout, boot_spec: BootSpec, provisioner: Provisioner,
               progress: Progress | None = None) -> tuple[SandboxTask, Prepared]:
    """``prepare`` then start the worker, all under the sandbox lock; return the running task."""
    with sandbox_lock(layout):
        prepared = await prepare(layout, boot_spec, provisioner, progress, locked=True)
        _note(progress, BootPhase.START, "starting the worker")
        task = SandboxTask(layout)
        await task.start(start_params(layout, boot_spec, prepared), locked=True)
    return task, prepared


def _append_log(layout: SandboxLayout, line: str) -> int:
    """Append one line to worker.log; return the file size before it (where new output starts)."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    fd = os.open(layout.worker_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        start = os.fstat(fd).st_size
        os.write(fd, line.encode() + b"\n")
        return start + len(line.encode()) + 1
    finally:
        os.close(fd)


def _output_since(layout: SandboxLayout, offset: int) -> list[str]:
    try:
        with open(layout.worker_log, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return [ln for ln in lines if not ln.startswith(_LAUNCHER_PREFIX)][-OUTPUT_TAIL_LINES:]


async def run_script(layout: SandboxLayout, boot: BootSpec, root: RootSpec,
                     env: dict[str, str], script_name: str, script: str, *,
                     announce: bool = True) -> None:
    """Run one ``/bin/sh -c script`` in the sandbox (cwd /workspace) as a one-shot launcher.

    The caller holds the sandbox lock. Raises ``ScriptFailed`` with the exit code and the last
    20 lines of the script's output (running past ``boot.script_timeout_s`` stops the run and
    counts as exit code 124), plus what to do when the cause is a known one (no /bin/sh left,
    a full disk).
    """
    line = f"[iii] running {script_name}: {script}" if announce \
        else f"[iii] checking that the sandbox still runs /bin/sh after {script_name}"
    offset = await asyncio.to_thread(_append_log, layout, line)
    params = launch_params(layout, boot, root, env, ["/bin/sh", "-c", script], WORKSPACE)
    task = SandboxTask(layout)
    await asyncio.to_thread(layout.oneshot_flag.write_text, script_name)
    try:
        await task.start(params, locked=True)  # cancelled: it kills what it spawned
        try:
            status = await _wait_script(layout, boot, task, script_name, offset)
        except asyncio.CancelledError:
            # A stop won: kill the run's whole sandbox (pid namespace) now; no marker is
            # written, so the next start runs the script again.
            await asyncio.shield(task.kill_now())
            await asyncio.to_thread(_append_log, layout, f"[iii] {script_name} interrupted "
                                    "(the worker was stopped); it runs again at the next start")
            raise
    finally:
        layout.oneshot_flag.unlink(missing_ok=True)
    if status.exit_code != 0:
        tail = await asyncio.to_thread(_output_since, layout, offset)
        if status.error:
            tail.append(status.error)
        hint = await asyncio.to_thread(_hint_for, layout, status, tail)
        raise ScriptFailed(script_name, status.exit_code,
                           (tail + ([hint] if hint else []))[-OUTPUT_TAIL_LINES:],
                           hint=_missing_command_hint(status.exit_code, tail, boot.image_ref))


def _hint_for(layout: SandboxLayout, status: ExitStatus, tail: list[str]) -> str | None:
    """What to do about a script failure whose cause we can tell; None when we cannot."""
    if (status.error or "").startswith("exec /bin/sh"):
        return ("the sandbox has no /bin/sh any more (did setup or install delete it?): fix "
                "the script, then `iii worker add --force` re-creates the sandbox")
    full = any("No space left on device" in line for line in tail)
    try:
        full = full or os.statvfs(layout.dir).f_bavail == 0
    except OSError:
        pass
    if full:
        return (f"the disk holding the sandbox {layout.dir} is full: free space there (`iii "
                "worker remove` unused workers), then start the worker again")
    return None


# dash: "/bin/sh: 1: bun: not found"; bash: "bash: bun: command not found".
_NOT_FOUND = re.compile(r"^\S*sh: (?:\d+: )?([^:\s]+): (?:command )?not found$")


def _missing_command_hint(exit_code: int, tail: list[str], image_ref: str) -> str | None:
    """Exit 127 from the shell means a command is not in the image (``bun.lock`` detected but a
    custom ``base_image`` without bun, say): name the command and the image, not just 127."""
    if exit_code != 127:
        return None
    for line in reversed(tail):
        match = _NOT_FOUND.match(line.strip())
        if match:
            image = f"image {image_ref}" if image_ref else "the image"
            return (f"{match.group(1)!r} is not installed in {image}: set base_image in "
                    "iii.worker.yaml to an image that has it, or install it in scripts.setup")
    return None


async def _wait_script(layout: SandboxLayout, boot: BootSpec, task: SandboxTask,
                       script_name: str, offset: int) -> ExitStatus:
    try:
        status = await task.wait(boot.script_timeout_s)
    except TimeoutError:
        await task.stop(SCRIPT_STOP_TIMEOUT_S)
        await task.delete()
        tail = await asyncio.to_thread(_output_since, layout, offset)
        raise ScriptFailed(script_name, 124,
                           tail + [f"{script_name} timed out after {boot.script_timeout_s:g}s"]) \
            from None
    await task.delete()
    return status
