from __future__ import annotations

import sys
from pathlib import Path

import pytest

from daemon.sandboxes.layout import RootMode, SandboxLayout
from daemon.sandboxes.provision import Provisioner, probe_overlay
from vmm_ffi.params import DirectoryRoot, OverlayRoot


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="overlayfs is Linux-only")
def test_overlay_probe_works_here(tmp_path: Path) -> None:
    ok, why = probe_overlay(tmp_path)
    assert ok, why
    assert list(tmp_path.iterdir()) == []  # the probe cleans up after itself


def test_overlay_provisioning_copies_nothing_and_is_reused(
        iii_home: Path, busybox_image: Path) -> None:
    prov = Provisioner(iii_home)
    assert prov.decision().mode is RootMode.OVERLAY
    lay = SandboxLayout(iii_home, "w")
    root = prov.provision(lay, busybox_image)
    assert root == OverlayRoot(lower=[str(busybox_image)], upper=str(lay.upper),
                               work=str(lay.work))
    assert list(lay.upper.iterdir()) == [] and lay.merged.is_dir() and lay.logs.is_dir()
    assert lay.mode() is RootMode.OVERLAY
    # a sandbox keeps its recorded mode even if the host's decision changes later
    assert Provisioner(iii_home, force=RootMode.COPY).provision(lay, busybox_image) == root


def test_copy_provisioning_copies_the_image(iii_home: Path, busybox_image: Path) -> None:
    prov = Provisioner(iii_home, force=RootMode.COPY)
    lay = SandboxLayout(iii_home, "w")
    root = prov.provision(lay, busybox_image)
    assert root == DirectoryRoot(path=str(lay.rootfs))
    assert (lay.rootfs / "bin/sh").is_symlink() and (lay.rootfs / "bin/busybox").is_file()
    assert lay.writable_root() == lay.rootfs
    assert not any(p.name.startswith(".rootfs") for p in lay.dir.iterdir())
