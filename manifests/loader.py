"""``load_worker``: a project directory → a resolved :class:`WorkerSpec` (SPEC §3–§4)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from manifests.detect import Detection, detect_project, undetectable_message
from manifests.errors import ManifestError
from manifests.fields import ManifestFields, read_fields
from manifests.infer import infer_install, infer_setup, infer_start
from manifests.source import find_manifest, parse_yaml, read_manifest_text
from manifests.spec import (
    DEFAULT_BASE_IMAGES,
    DEFAULT_CPUS,
    DEFAULT_KIND,
    DEFAULT_MEMORY_MIB,
    DEFAULT_PACKAGE_MANAGER,
    MANIFEST_FILENAME,
    NODE_KINDS,
    PACKAGE_MANAGERS,
    Resources,
    Scripts,
    WorkerSpec,
    sanitize_worker_name,
    validate_worker_name,
)


def load_worker(project_dir: Path, *, name: str | None = None) -> WorkerSpec:
    """Resolve ``project_dir`` into a :class:`WorkerSpec`.

    With an ``iii.worker.yaml`` the manifest is checked and completed by detection and
    inference; without one the project type is detected from its files and the name is the
    directory's basename (sanitised). ``name`` overrides the manifest's name (``--name``).

    Raises :class:`ManifestError` (one line, with file:line:column when there is a position)
    for anything unusable: a missing directory, an invalid manifest, nothing to detect, no
    start command to infer.

    >>> load_worker(Path("examples/python-worker")).scripts.start  # doctest: +SKIP
    'python worker.py'
    """
    project = _project_directory(project_dir)
    manifest = find_manifest(project)
    detection = detect_project(project)
    if manifest is None:
        if detection is None:
            raise ManifestError(None, None, None, undetectable_message(project))
        fields = ManifestFields(name=sanitize_worker_name(project.name))
    else:
        fields = read_fields(parse_yaml(read_manifest_text(manifest)))
    if name is not None:
        fields.name = validate_worker_name(name)
    if fields.name is None:
        raise ManifestError(
            MANIFEST_FILENAME, None, None, "name is required: add `name: my-worker` at the top"
        )
    return _resolve(
        project, fields, detection, manifest_file=MANIFEST_FILENAME if manifest else None
    )


def _resolve(
    project: Path, fields: ManifestFields, detection: Detection | None, *, manifest_file: str | None
) -> WorkerSpec:
    warnings = list(fields.warnings)
    kind = fields.kind or (detection.kind if detection is not None else DEFAULT_KIND)
    package_manager = _package_manager(kind, fields, detection, warnings)
    if fields.base_image is not None:
        base_image = fields.base_image
    elif kind == "bun" or package_manager == "bun":
        base_image = DEFAULT_BASE_IMAGES["bun"]
    elif kind in NODE_KINDS:
        base_image = DEFAULT_BASE_IMAGES["node"]
    else:
        base_image = DEFAULT_BASE_IMAGES[kind]

    entry = fields.entry
    if entry is not None and kind != "rust" and not _exists(project / entry):
        warnings.append(f"runtime.entry {entry!r} does not exist in the project")
    setup = fields.setup if fields.setup is not None else infer_setup()
    install = (
        fields.install if fields.install is not None
        else infer_install(kind, package_manager, project)
    )
    if fields.start is not None:
        start = fields.start
        if not start.strip():
            warnings.append("scripts.start is empty: the worker has nothing to run")
    else:
        start = infer_start(kind, package_manager, entry, project, manifest_file=manifest_file)

    return WorkerSpec(
        name=fields.name or "",
        kind=kind,  # type: ignore[arg-type]  # checked against KINDS by read_fields/detection
        package_manager=package_manager,  # type: ignore[arg-type]
        entry=entry,
        base_image=base_image,
        scripts=Scripts(setup=setup, install=install, start=start),
        env=dict(fields.env),
        resources=Resources(
            memory=fields.memory if fields.memory is not None else DEFAULT_MEMORY_MIB,
            cpus=fields.cpus if fields.cpus is not None else DEFAULT_CPUS,
        ),
        config=dict(fields.config),
        warnings=warnings,
        project_dir=str(project),
    )


def _package_manager(
    kind: str, fields: ManifestFields, detection: Detection | None, warnings: list[str]
) -> str | None:
    explicit = fields.package_manager
    if kind in NODE_KINDS:
        if explicit is None:
            detected = detection.package_manager if detection is not None else None
            return detected or DEFAULT_PACKAGE_MANAGER
        if explicit not in PACKAGE_MANAGERS:
            line, column = fields.package_manager_at or (None, None)
            raise ManifestError(
                MANIFEST_FILENAME, line, column,
                f"runtime.package_manager must be one of {', '.join(PACKAGE_MANAGERS)} for kind "
                f"{kind}, got {explicit!r}",
            )
        return explicit
    if kind == "bun":
        if explicit not in (None, "bun"):
            warnings.append(
                f"runtime.package_manager {explicit!r} is ignored for kind bun "
                "(bun is its own package manager)"
            )
        return "bun"
    # python and rust have one installer each (pip, cargo); upstream templates still carry
    # `package_manager: pip`, so it is accepted and ignored rather than refused.
    if explicit is not None:
        warnings.append(
            f"runtime.package_manager {explicit!r} is ignored for kind {kind} "
            "(it applies to typescript and javascript only)"
        )
    return None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for the filesystem
        return False


def _project_directory(project_dir: Path) -> Path:
    path = Path(os.path.expanduser(str(project_dir)))
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ManifestError(None, None, None, f"project directory {path} does not exist") from exc
    except OSError as exc:
        raise ManifestError(None, None, None, f"cannot access {path}: {exc.strerror}") from exc
    except ValueError as exc:  # an embedded NUL byte
        raise ManifestError(None, None, None, f"invalid project path {str(path)!r}") from exc
    if not stat.S_ISDIR(mode):
        raise ManifestError(
            None, None, None, f"{path} is not a directory; pass a worker project directory"
        )
    return path.resolve()
