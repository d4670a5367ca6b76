"""Classify an ``iii worker add`` target (SPEC §5): local directory, OCI image, or config name."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from daemon.errors import InvalidArgument
from manifests.errors import ManifestError
from manifests.reference import InvalidReference, parse_reference
from manifests.spec import validate_worker_name


class TargetKind(enum.Enum):
    LOCAL = "local"
    OCI = "oci"
    CONFIG = "config"


@dataclass(frozen=True, slots=True)
class AddTarget:
    kind: TargetKind
    path: Path | None = None  # LOCAL
    image: str | None = None  # OCI: canonical reference
    name: str | None = None  # OCI/CONFIG: the derived name (LOCAL: from the manifest)


def classify_target(target: str, name: str | None = None) -> AddTarget:
    """Decide what ``target`` names. The client has already expanded ``~`` and made paths absolute.

    Raises :class:`InvalidArgument` for a relative or ``~`` path (the client must resolve it),
    an invalid image reference, or an invalid worker name.
    """
    if target.startswith(("~", ".")):
        raise InvalidArgument(
            f"local path {target!r} must be absolute: the client resolves '~' and relative paths"
        )
    if target.startswith("/"):
        return AddTarget(TargetKind.LOCAL, path=Path(target), name=name)
    if "/" in target or ":" in target:
        try:
            ref = parse_reference(target)
        except InvalidReference as exc:
            raise InvalidArgument(str(exc)) from exc
        derived = name or ref.repository.rsplit("/", 1)[-1]
        return AddTarget(TargetKind.OCI, image=ref.canonical, name=validate_name(derived))
    return AddTarget(TargetKind.CONFIG, name=validate_name(name or target))


def validate_name(name: str) -> str:
    """The manifest's worker-name rule (names become directory names), as ``InvalidArgument``."""
    try:
        return validate_worker_name(name)
    except ManifestError as exc:
        raise InvalidArgument(exc.message) from exc


def name_problem(name: str) -> str | None:
    """Why a (hand-written) config.yaml name cannot be a managed worker, or None when it can.
    Such an entry is listed with this reason and never started: its name would be a path."""
    try:
        validate_worker_name(name)
    except ManifestError as exc:
        return (f"invalid name in config.yaml: {exc.message}; rename the entry there "
                "(it is not started until then)")
    return None
