"""Choosing the isolation backend (``auto | libkrun | namespace``, SPEC §8) for new sandboxes.

A thin translation of ``vmm_ffi.availability.select_backend`` into daemon errors: the reason
libkrun is not used travels with the choice so every add/start can show it.
"""

from __future__ import annotations

from typing import cast

import msgspec

from daemon.errors import InvalidArgument, Unavailable
from vmm_ffi.availability import Setting, select_backend
from vmm_ffi.errors import BackendUnavailable
from vmm_ffi.params import Backend

ISOLATION_SETTINGS = ("auto", "libkrun", "namespace")


class BackendChoice(msgspec.Struct, frozen=True, kw_only=True):
    """The backend to use and, when it is not libkrun, why (shown on every add/start)."""

    backend: Backend
    reason: str | None = None


def choose_backend(setting: str) -> BackendChoice:
    """Apply the isolation setting. Blocking (probes once per process): call via a thread.

    Raises ``InvalidArgument`` for an unknown setting, ``Unavailable`` (reason + how to fix)
    when the requested backend, or for ``auto`` every backend, cannot run here.
    """
    if setting not in ISOLATION_SETTINGS:
        raise InvalidArgument(f"isolation {setting!r} is invalid; use one of "
                              + ", ".join(ISOLATION_SETTINGS))
    try:
        backend, reason = select_backend(cast(Setting, setting))
    except BackendUnavailable as exc:
        raise Unavailable(exc.reason, exc.hint) from exc
    return BackendChoice(backend=cast(Backend, backend), reason=reason)
