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


def extract_python_rootfs(root: Path) -> Path:
    """The debootstrap python image (``tests.support.images``) unpacked at ``root``.

    Skips the calling test when the image is not built and cannot be (debootstrap needs root).
    """
    import os

    import pytest

    from tests.support.images import build_python_image, python_image_cached

    if os.geteuid() != 0 and not python_image_cached():
        pytest.skip("building the debootstrap python image needs root (CI runs as root)")
    layer = build_python_image().layer
    assert layer.path is not None
    root.mkdir(parents=True)
    subprocess.run(["tar", "--numeric-owner", "-xzf", str(layer.path), "-C", str(root)],
                   check=True)
    return root


def build_deb(out_dir: Path, package: str, files: dict[str, tuple[int, str]]) -> Path:
    """A real ``.deb`` (``dpkg-deb --build``) shipping ``files``: {path: (mode, content)}."""
    tree = out_dir / f"{package}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: iii tests <tests@iii.invalid>\nDescription: file-system semantics test\n")
    for rel, (mode, content) in files.items():
        path = tree / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(mode)
    deb = out_dir / f"{package}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)],
                   check=True, capture_output=True)
    return deb
