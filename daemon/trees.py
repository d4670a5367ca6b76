"""Removing directory trees the daemon made: image rootfs caches and sandbox dirs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from vmm_ffi.launch import launcher_python_path

REMOVE_TIMEOUT_S = 600.0


def remove_tree(path: Path) -> None:
    """``rm -rf`` that never follows symlinks and copes with directories a non-root owner
    cannot enter as they are: read-only directories from an image, and overlayfs' mode-000
    ``work/work``. A missing ``path`` is fine."""

    def make_writable(_func: object, failed: str, _exc: object) -> None:
        os.chmod(os.path.dirname(failed), stat.S_IRWXU)
        if os.path.isdir(failed) and not os.path.islink(failed):
            os.chmod(failed, stat.S_IRWXU)
            remove_tree(Path(failed))
        else:
            os.unlink(failed)

    if not (path.exists() or path.is_symlink()):
        return
    try:
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=make_writable)
        else:
            shutil.rmtree(path, onerror=make_writable)
    except PermissionError:
        if os.geteuid() == 0:
            raise
        _remove_as_mapped_root(path)


def _remove_as_mapped_root(path: Path) -> None:
    """What a sandbox made under the user's subordinate ids: delete it as root of a user
    namespace with the same maps (``python -m vmm_ffi.idmap remove``)."""
    proc = subprocess.run([sys.executable, "-m", "vmm_ffi.idmap", "remove", str(path)],
                          check=False, capture_output=True, text=True,
                          timeout=REMOVE_TIMEOUT_S,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                               "PYTHONPATH": launcher_python_path()})
    if proc.returncode != 0 or path.exists():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise PermissionError(f"cannot remove {path}: {tail}")
