"""Turning a config.yaml entry into what the sandbox boot needs (SPEC §5, §7, §8)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from daemon.config.entries import WorkerEntry, WorkerKind
from daemon.config.env import flatten_config
from daemon.config.network import NetworkSetting, merge
from daemon.config.settings import DaemonSettings
from daemon.errors import InvalidArgument, InvalidProject, InvalidState
from daemon.images import ImageStore
from daemon.images.models import CachedImage
from daemon.images.pull import ProgressCallback
from daemon.sandboxes import BootSpec, NetworkChoice, choose_backend, choose_ids, choose_network
from daemon.sandboxes.netpolicy import build_policy
from daemon.workers.launching.image_user import resolve_user
from manifests import ManifestError, WorkerSpec, load_worker
from vmm_ffi.network.bridge import BridgeError, check_subnet, names, tag_of
from vmm_ffi.params import Backend, BridgeParams, NetworkPolicy


def manifest_error(exc: ManifestError, project: str) -> InvalidProject:
    file = None if exc.file is None else str(Path(project) / exc.file)
    return InvalidProject(str(exc), file=file, line=exc.line, column=exc.column)


async def load_project(path: str, name: str | None = None) -> WorkerSpec:
    """The project's resolved spec; ``InvalidProject`` (file, line, column) when it is unusable."""
    try:
        return await asyncio.to_thread(load_worker, Path(path), name=name)
    except ManifestError as exc:
        raise manifest_error(exc, path) from exc


def bridge_params(settings: DaemonSettings) -> BridgeParams:
    """This daemon's bridge: its state under ``<home>/network``, named after the home."""
    return BridgeParams(state_dir=str(settings.home / "network"),
                        tag=tag_of(str(settings.home)), subnet=settings.network_subnet)


async def resolve_network(entry: WorkerEntry, settings: DaemonSettings,
                          backend: Backend) -> tuple[NetworkPolicy, NetworkChoice]:
    """The worker's network policy (its entry's over daemon.yaml's) and how it is connected.

    Raises ``InvalidArgument`` (a policy that cannot be, a name that does not resolve) or
    ``Unavailable`` (no helper).
    """
    try:
        setting = merge(settings.network_default, entry.network_setting())
    except ValueError as exc:
        raise InvalidArgument(f"worker '{entry.name}': {exc}") from None
    return await connect_network(setting, settings, backend)


async def connect_network(setting: NetworkSetting, settings: DaemonSettings,
                          backend: Backend) -> tuple[NetworkPolicy, NetworkChoice]:
    """The launcher's policy for ``setting`` and how a sandbox of ``backend`` is connected
    (a worker's, or an ephemeral sandbox's that asked for a network)."""
    network = choose_network(setting.policy or "egress", backend,
                             connect=settings.network_backend)
    if network.mode == "bridge" and settings.network_subnet is not None:
        bridge, _ = names(tag_of(str(settings.home)))
        try:
            check_subnet(IPv4Network(settings.network_subnet), bridge)
        except (BridgeError, OSError) as exc:
            raise InvalidArgument(f"{settings.settings_path}: {exc}") from None
    if network.mode == "host":
        return NetworkPolicy(), network
    policy = await asyncio.to_thread(build_policy, setting, settings.engine_url,
                                     settings.registry_mirror)
    return policy, network


@dataclass
class ResolvedBoot:
    """A boot spec plus what the caller reports: the spec (local workers) and warnings."""

    boot: BootSpec
    image: CachedImage
    spec: WorkerSpec | None
    warnings: list[str]


async def resolve_boot(entry: WorkerEntry, settings: DaemonSettings,
                       images: ImageStore, pull_progress: ProgressCallback | None = None,
                       *, refresh: bool = False) -> ResolvedBoot:
    """Load the manifest (local) or image config (OCI), pull the image, choose the backend.

    ``refresh`` pulls the image even when it is cached: ``add --force`` is how users pick up
    an updated base image (the seed says so), so it must not reuse the old one.

    Raises ``InvalidState`` for config and binary entries, ``InvalidProject``, ``ImageError``,
    ``Unavailable`` (isolation) or ``InvalidArgument`` (config env expansion).
    """
    kind = entry.kind(settings.home)
    if kind is WorkerKind.CONFIG:
        raise InvalidState(f"worker '{entry.name}' is a config worker served by the engine; "
                           "it cannot be started or stopped on its own")
    if kind is WorkerKind.BINARY:
        raise InvalidState(f"worker '{entry.name}' is a binary worker: it runs on the host "
                           "without a sandbox or image")
    choice = await asyncio.to_thread(choose_backend, settings.isolation)
    warnings = [] if choice.reason is None else [f"isolation: namespace ({choice.reason})"]
    policy, network = await resolve_network(entry, settings, choice.backend)
    id_shift = await asyncio.to_thread(choose_ids, choice.backend)
    if network.warning:
        warnings.append(network.warning)
    config_env = flatten_config(entry.config, environ=os.environ, worker=entry.name)
    ca = None if settings.ca_bundle is None else str(settings.ca_bundle)
    common: dict[str, Any] = {
        "name": entry.name, "engine_url": settings.engine_url, "backend": choice.backend,
        "config_env": config_env, "ca_bundle": ca, "network": network.mode, "policy": policy,
        "bridge": bridge_params(settings) if network.mode == "bridge" else None,
        "pasta": network.pasta, "slirp4netns": network.slirp4netns, "id_shift": id_shift}
    if kind is WorkerKind.LOCAL:
        assert entry.worker_path is not None
        return await _local_boot(entry.worker_path, entry.name, images, pull_progress, refresh,
                                 common, warnings)
    assert entry.image is not None
    return await _oci_boot(entry.image, images, pull_progress, refresh, common, warnings)


async def _local_boot(project: str, name: str, images: ImageStore,
                      pull_progress: ProgressCallback | None, refresh: bool,
                      common: dict[str, Any], warnings: list[str]) -> ResolvedBoot:
    """A local worker: its manifest's base image, scripts, env and resources."""
    spec = await load_project(project, name)
    image = await images.pull(spec.base_image, refresh=refresh, progress=pull_progress)
    boot = BootSpec(image_rootfs=str(image.path), image_env=list(image.config.env),
                    image_ref=spec.base_image, project=spec.project_dir, setup=spec.scripts.setup,
                    install=spec.scripts.install, start=spec.scripts.start,
                    manifest_env=dict(spec.env), cpus=spec.resources.cpus,
                    memory_mib=spec.resources.memory, **common)
    return ResolvedBoot(boot, image, spec, warnings + list(spec.warnings))


async def _oci_boot(ref: str, images: ImageStore, pull_progress: ProgressCallback | None,
                    refresh: bool, common: dict[str, Any], warnings: list[str]
                    ) -> ResolvedBoot:
    """An OCI worker: the image's Entrypoint + Cmd, working dir and USER (namespace only)."""
    image = await images.pull(ref, refresh=refresh, progress=pull_progress)
    argv = list(image.config.entrypoint) + list(image.config.cmd)
    if not argv:
        raise InvalidArgument(f"image {ref} has neither Entrypoint nor Cmd: nothing to run")
    user = await asyncio.to_thread(resolve_user, image.config.user, Path(image.path), ref)
    backend = common["backend"]
    if user is not None and backend != "namespace":
        warnings.append(f"image {ref}: USER {image.config.user!r} is not applied "
                        f"with the {backend} backend (runs as root in the guest)")
        user = None
    boot = BootSpec(image_rootfs=str(image.path), image_env=list(image.config.env), argv=argv,
                    image_ref=ref, workdir=image.config.working_dir or "/", user=user,
                    **common)
    return ResolvedBoot(boot, image, None, warnings)
