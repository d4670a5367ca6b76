"""The ``sandboxes:`` section of ``daemon.yaml``: catalog and policy of the ephemeral sandbox
service (upstream iii's ``iii-sandbox`` worker config, plus our catalog and warm pool).

    sandboxes:
      catalog: {python: docker.io/iiidev/python:latest}  # overrides / adds catalog names
      custom_images: {tools: ghcr.io/acme/tools:1}        # upstream's name for the same
      allow_any_image: false      # true: any OCI reference is accepted as ``image``
      image_allowlist: [python, node]  # absent: every catalog name; [] denies everything
      max_concurrent_sandboxes: 32
      max_concurrent_exec_per_sandbox: 4
      max_exec_timeout_ms: 300000
      default_idle_timeout_secs: 300
      default_cpus: 1
      default_memory_mb: 512
      warm_pool: {python: 2}      # booted, idle sandboxes kept ready per catalog name
      warm_pool_after_use: 1      # the same for any catalog name once it has been used
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

__all__ = ["DEFAULT_CATALOG", "SandboxPolicy", "load_policy"]

#: Catalog name → OCI reference. ``python`` and ``node`` are upstream's presets; ``bun`` and
#: ``shell`` are ours (SPEC §3's bun image; busybox for plain shell work).
DEFAULT_CATALOG: dict[str, str] = {
    "python": "docker.io/iiidev/python:latest",
    "node": "docker.io/iiidev/node:latest",
    "bun": "docker.io/oven/bun:latest",
    "shell": "docker.io/library/busybox:latest",
}

Count = Annotated[int, msgspec.Meta(ge=0, le=4096)]


class SandboxPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Resolved ``sandboxes:`` settings (every key optional in daemon.yaml)."""

    catalog: dict[str, str] = {}
    custom_images: dict[str, str] = {}
    allow_any_image: bool = False
    image_allowlist: list[str] | None = None
    max_concurrent_sandboxes: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 32
    # 0 is taken as 1 (upstream: "not unlimited")
    max_concurrent_exec_per_sandbox: Count = 4
    max_exec_timeout_ms: Annotated[int, msgspec.Meta(ge=1)] = 300_000
    default_idle_timeout_secs: Annotated[int, msgspec.Meta(ge=1)] = 300
    default_cpus: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    default_memory_mb: Annotated[int, msgspec.Meta(ge=16, le=65536)] = 512
    warm_pool: dict[str, Count] = {}
    # every catalog name once it has been asked for (since the daemon started) keeps this many
    # ready; ``warm_pool`` entries override it per name (0 turns a name's pool off)
    warm_pool_after_use: Count = 1
    auto_install: bool = True  # pull a catalog image on first use when it is not cached
    max_output_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1 << 20  # per stream, per exec
    max_file_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 8 << 20  # fs::read / fs::write

    def images(self) -> dict[str, str]:
        """Every catalog name → its OCI reference (defaults, then ``custom_images``, then
        ``catalog``, which may re-point a preset: that is the operator's choice)."""
        return {**DEFAULT_CATALOG, **self.custom_images, **self.catalog}

    def preset(self, name: str) -> bool:
        return name in DEFAULT_CATALOG and name not in self.catalog \
            and name not in self.custom_images

    @property
    def exec_slots(self) -> int:
        return max(1, self.max_concurrent_exec_per_sandbox)


def load_policy(section: Any) -> SandboxPolicy:
    """The policy from daemon.yaml's (already validated) ``sandboxes:`` mapping. ruamel's
    scalars are str/int subclasses that msgspec keeps as they are and cannot encode later:
    they become plain values first."""
    from daemon.config.entries import plain

    return msgspec.convert(plain(section or {}), SandboxPolicy)
