"""Booting and destroying one ephemeral sandbox, and sweeping what a dead daemon left.

A sandbox is the namespace backend's ordinary launcher (``vmm_ffi.launcher``), forked by the
launcher zygote (``daemon.ephemeral.zygote``: no interpreter start or import per sandbox, one
shared heap), on an overlay of the cached image (``daemon.sandboxes.Provisioner``, O(1):
nothing is copied), under ``$III_HOME/sandboxes/managed/<id>/``. Its workload is a process that only waits (``sleep``):
the sandbox's init stays up, and every ``exec`` / ``fs::*`` call is a fork of the daemon's exec
fork server that joins that init's namespaces (``vmm_ffi.exec.enter``) — no namespace, root or
interpreter is made per call. Without ``network: true`` the sandbox has its own network
namespace holding only loopback. Stopping removes the directory, so the upper dir (everything
the sandbox wrote) is gone; the overlay mount lived only in the launcher's mount namespace. A
daemon that dies takes the zygote and with it every launcher (PDEATHSIG); the next one sweeps
the directories.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from daemon.config.sandbox_policy import SandboxPolicy
from daemon.config.settings import DaemonSettings
from daemon.ephemeral.errors import SandboxError, SCode, sandbox_error
from daemon.ephemeral.zygote import LauncherZygote, ZygoteTask, kill_recorded
from daemon.errors import DaemonError, ImageError
from daemon.images import ImageStore
from daemon.images.models import CachedImage
from daemon.sandboxes import (
    Provisioner,
    SandboxLayout,
    build_sandbox_env,
    choose_ids,
    place_host_files,
)
from daemon.trees import remove_tree
from daemon.workers.launching.boot_specs import bridge_params, connect_network
from vmm_ffi.availability import check_namespace
from vmm_ffi.params import IdShift, LaunchParams, NetworkPolicy

__all__ = ["Booted", "SandboxBooter"]

log = logging.getLogger("iii.daemon.sandboxes")

IDLE_ARGV = ["sleep", "2147483647"]  # the workload: keeps the init (and its namespaces) up
STOP_GRACE_S = 0.2  # upstream's STOP_GRACE_MS: nothing in an ephemeral sandbox needs flushing


@dataclass
class Booted:
    """A running sandbox as the launcher reported it."""

    layout: SandboxLayout
    task: ZygoteTask
    sandbox_pid: int
    env: dict[str, str]
    workdir: str
    seccomp: bool


class SandboxBooter:
    """Boots sandboxes from cached images under ``<home>/sandboxes``; one per daemon."""

    def __init__(self, settings: DaemonSettings, images: ImageStore) -> None:
        self.settings = settings
        self.home = settings.home / "sandboxes"
        self.images = images
        self.provisioner = Provisioner(self.home)
        self.zygote = LauncherZygote()
        self._ids: tuple[IdShift | None] | None = None

    @property
    def policy(self) -> SandboxPolicy:
        return self.settings.sandboxes

    async def image(self, ref: str) -> CachedImage:
        """The cached image (pulled first with ``auto_install``): S101 / S102 otherwise."""
        cached = await asyncio.to_thread(self.images.lookup, ref)
        if cached is not None:
            return cached
        if not self.policy.auto_install:
            raise sandbox_error(SCode.S101, f"rootfs missing on disk for image '{ref}'. Run: "
                                f"iii image pull {ref} (see S101 docs)")
        try:
            return await self.images.pull(ref)
        except ImageError as exc:
            raise sandbox_error(SCode.S102, f"auto-install failed for image '{ref}': "
                                f"{exc.message}") from exc

    async def _id_shift(self) -> IdShift | None:
        if self._ids is None:
            try:
                self._ids = (await asyncio.to_thread(choose_ids, "namespace"),)
            except DaemonError as exc:
                raise sandbox_error(SCode.S300, f"VM boot failed: {exc.message}") from exc
        return self._ids[0]

    async def boot(self, sandbox_id: str, image: CachedImage, *, cpus: int, memory_mb: int,
                   network: bool) -> Booted:
        """Provision and launch; S300 when the sandbox cannot start (nothing is left)."""
        status = await asyncio.to_thread(check_namespace)
        if not status.available:
            raise sandbox_error(SCode.S300, f"VM boot failed: namespace sandboxes are not "
                                f"available here: {status.reason}")
        layout = SandboxLayout(self.home, sandbox_id)
        try:
            params = await self._params(layout, image, cpus, memory_mb, network)
            task = await self._spawn(params, layout)
        except BaseException as exc:
            await asyncio.shield(self._discard(layout))
            if isinstance(exc, DaemonError) and not isinstance(exc, SandboxError):
                raise sandbox_error(SCode.S300, f"VM boot failed: {exc.message}") from exc
            raise
        return Booted(layout=layout, task=task, sandbox_pid=task.result.sandbox_pid,
                      env=params.env, workdir=params.workdir,
                      seccomp=task.result.seccomp is not None)

    async def _spawn(self, params: LaunchParams, layout: SandboxLayout) -> ZygoteTask:
        """The zygote's spawn, in a thread that a cancellation cannot stop: a cancelled boot
        waits for it (a launch takes milliseconds) and stops the launcher it started."""
        spawn = asyncio.ensure_future(asyncio.to_thread(self.zygote.spawn, params, layout))
        try:
            return await asyncio.shield(spawn)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self.destroy(layout, await spawn)
            raise

    async def _params(self, layout: SandboxLayout, image: CachedImage, cpus: int,
                      memory_mb: int, network: bool) -> LaunchParams:
        root = await asyncio.to_thread(self.provisioner.provision, layout, image.path)
        mode, pasta, slirp = "none", None, None
        policy, bridge = NetworkPolicy(mode="none"), None
        ca_placed = False
        id_shift = await self._id_shift()
        if network:  # connected as the daemon's workers are, under its default policy
            policy, choice = await connect_network(self.settings.network_default, self.settings,
                                                   "namespace")
            mode, pasta, slirp = choice.mode, choice.pasta, choice.slirp4netns
            bridge = bridge_params(self.settings) if mode == "bridge" else None
            ca_placed = await asyncio.to_thread(place_host_files, layout.writable_root(),
                                                self.settings.ca_bundle)
        env = build_sandbox_env(list(image.config.env), {}, {}, self.settings.engine_url,
                                f"sandbox-{layout.name[:8]}", "namespace", ca_placed)
        return LaunchParams(name=layout.name, backend="namespace", rootfs=root,
                            merged=str(layout.merged), argv=IDLE_ARGV, env=env,
                            workdir=image.config.working_dir or "/", cpus=cpus,
                            memory_mib=memory_mb, log_path=str(layout.worker_log),
                            exit_path=str(layout.exit_file), hostname="sandbox",
                            network=mode, policy=policy, bridge=bridge,  # type: ignore[arg-type]
                            pasta=pasta, slirp4netns=slirp, id_shift=id_shift)

    async def destroy(self, layout: SandboxLayout, task: ZygoteTask) -> None:
        """Stop the launcher (SIGTERM, SIGKILL after ``STOP_GRACE_S``) and delete the dir."""
        try:
            await task.stop(STOP_GRACE_S)
        finally:
            task.close()
            await self._discard(layout)

    async def _discard(self, layout: SandboxLayout) -> None:
        try:
            await asyncio.to_thread(layout.remove)
        except (OSError, DaemonError) as exc:
            log.warning("sandbox %s: cannot remove %s: %s", layout.name, layout.dir, exc)

    def close(self) -> None:
        """Stop the zygote (after every sandbox was destroyed)."""
        self.zygote.close()

    async def sweep(self) -> int:
        """At daemon start: stop every sandbox a previous daemon left (crash, ``kill -9``) and
        delete every sandbox directory. Returns how many launchers were stopped."""
        managed = self.home / "managed"
        try:
            names = sorted(os.listdir(managed))
        except FileNotFoundError:
            return 0
        stopped = 0
        for name in names:
            if name.startswith("."):  # a removal that was interrupted
                await asyncio.to_thread(remove_tree, managed / name)
                continue
            stopped += await self._sweep_one(managed / name)
        return stopped

    async def _sweep_one(self, path: Path) -> int:
        try:
            layout = SandboxLayout(self.home, path.name)
        except DaemonError:
            await asyncio.to_thread(remove_tree, path)
            return 0
        killed = await asyncio.to_thread(kill_recorded, layout)
        await self._discard(layout)
        return int(killed)
