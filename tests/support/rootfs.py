"""Tiny real root filesystems for sandbox tests, built from Debian's static busybox."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

BUSYBOX = Path("/bin/busybox")


def make_busybox_rootfs(root: Path) -> Path:
    """Lay out a minimal rootfs at ``root``: static busybox with its applets as symlinks.

    Gives ``/bin/sh`` and the usual tools, plus the directories a sandbox mounts over.
    """
    for d in ("bin", "etc", "proc", "dev", "tmp", "var", "usr/bin", "root", "workspace"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    return root
