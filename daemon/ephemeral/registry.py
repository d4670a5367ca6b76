"""The live sandboxes: one :class:`Sandbox` record each, by id, with its exec slots and the
activity clock the idle reaper reads."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from client.protocol.sandbox import SandboxSummary
from daemon.ephemeral.errors import SCode, sandbox_error
from daemon.ephemeral.zygote import ZygoteTask
from daemon.sandboxes import SandboxLayout

if TYPE_CHECKING:
    from daemon.ephemeral.boot import Booted

__all__ = ["Sandbox", "SandboxTable"]

REAP_GRACE_S = 60.0  # upstream: a busy sandbox is reclaimed past idle + max exec + 60 s


@dataclass
class Sandbox:
    """One booted sandbox: its launcher, the init every exec joins, and its exec env."""

    id: str
    image: str  # the catalog name (or reference) asked for
    oci_ref: str
    layout: SandboxLayout
    task: ZygoteTask
    sandbox_pid: int
    env: dict[str, str]
    workdir: str
    seccomp: bool
    cpus: int
    memory_mb: int
    network: bool
    name: str | None = None
    idle_timeout_s: float = 300.0
    created: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)
    exec_in_flight: int = 0
    stopped: bool = False

    @classmethod
    def from_booted(cls, booted: Booted, *, id: str, image: str, oci_ref: str, cpus: int,
                    memory_mb: int, network: bool) -> Sandbox:
        """The record of a sandbox ``SandboxBooter.boot`` just started, as it was asked for."""
        return cls(id=id, image=image, oci_ref=oci_ref, layout=booted.layout, task=booted.task,
                   sandbox_pid=booted.sandbox_pid, env=booted.env, workdir=booted.workdir,
                   seccomp=booted.seccomp, cpus=cpus, memory_mb=memory_mb, network=network)

    def touch(self) -> None:
        self.last_active = time.monotonic()

    def idle_expired(self, now: float, max_exec_s: float) -> bool:
        """Idle past its timeout; a busy one only past timeout + max exec + grace."""
        idle = now - self.last_active
        if self.exec_in_flight:
            return idle > self.idle_timeout_s + max_exec_s + REAP_GRACE_S
        return idle > self.idle_timeout_s

    def summary(self, slots: int, now: float) -> SandboxSummary:
        return SandboxSummary(sandbox_id=self.id, name=self.name, image=self.image,
                              age_secs=int(now - self.created),
                              exec_in_progress=self.exec_in_flight > 0,
                              exec_in_flight=self.exec_in_flight,
                              exec_slots_free=max(0, slots - self.exec_in_flight),
                              stopped=self.stopped)


class SandboxTable:
    """Live sandboxes by id; ``reserve`` counts boots in flight against the cap."""

    def __init__(self) -> None:
        self._by_id: dict[str, Sandbox] = {}
        self._booting = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def all(self) -> list[Sandbox]:
        return list(self._by_id.values())

    @contextlib.contextmanager
    def reserve(self, cap: int) -> Iterator[None]:
        """Hold one place while a sandbox boots; S400 when ``cap`` live + booting are reached."""
        if len(self._by_id) + self._booting >= cap:
            raise sandbox_error(SCode.S400, f"resource limit exceeded: max_concurrent_sandboxes "
                                f"({cap}) reached; stop one (sandbox::stop) or raise "
                                "sandboxes.max_concurrent_sandboxes in daemon.yaml")
        self._booting += 1
        try:
            yield
        finally:
            self._booting -= 1

    def add(self, sandbox: Sandbox) -> None:
        self._by_id[sandbox.id] = sandbox

    def get(self, sandbox_id: str) -> Sandbox:
        """The live sandbox; S002 when unknown (gone, never made, or reaped)."""
        sandbox = self._by_id.get(sandbox_id)
        if sandbox is None:
            raise sandbox_error(SCode.S002, f"sandbox not found: {sandbox_id}")
        return sandbox

    def pop(self, sandbox_id: str) -> Sandbox | None:
        return self._by_id.pop(sandbox_id, None)

    @contextlib.contextmanager
    def exec_slot(self, sandbox: Sandbox, slots: int) -> Iterator[None]:
        """One of the sandbox's exec slots for the ``with`` body; S003 when all are taken."""
        if sandbox.stopped:
            raise sandbox_error(SCode.S004, f"sandbox already stopped: {sandbox.id}")
        if sandbox.exec_in_flight >= slots:
            raise sandbox_error(SCode.S003, f"sandbox {sandbox.id} is at its exec concurrency "
                                f"cap (max_concurrent_exec_per_sandbox = {slots})")
        sandbox.exec_in_flight += 1
        sandbox.touch()
        try:
            yield
        finally:
            sandbox.exec_in_flight -= 1
            sandbox.touch()
