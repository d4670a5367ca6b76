"""Removing directory trees the daemon made: image rootfs caches and sandbox dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vmm_ffi.isolation.idmap import remove_tree_here
from vmm_ffi.launch import launcher_python_path

REMOVE_TIMEOUT_S = 600.0


def remove_tree(path: Path) -> None:
    """``rm -rf`` that never follows symlinks and copes with directories a non-root owner
    cannot enter as they are: read-only directories from an image, and overlayfs' mode-000
    ``work/work``. A missing ``path`` is fine."""
    if not (path.exists() or path.is_symlink()):
        return
    try:
        remove_tree_here(str(path))
    except PermissionError:
        if os.geteuid() == 0:
            raise
        _remove_as_mapped_root(path)


def _remove_as_mapped_root(path: Path) -> None:
    """What a sandbox made under the user's subordinate ids: delete it as root of a user
    namespace with the same maps (``python -m vmm_ffi.isolation.userns remove``)."""
    proc = subprocess.run([sys.executable, "-m", "vmm_ffi.isolation.userns", "remove", str(path)],
                          check=False, capture_output=True, text=True,
                          timeout=REMOVE_TIMEOUT_S,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                               "PYTHONPATH": launcher_python_path()})
    if proc.returncode != 0 or path.exists():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise PermissionError(f"cannot remove {path}: {tail}")
