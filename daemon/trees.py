"""Removing directory trees the daemon made: image rootfs caches and sandbox dirs."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path


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
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=make_writable)
    else:
        shutil.rmtree(path, onerror=make_writable)
