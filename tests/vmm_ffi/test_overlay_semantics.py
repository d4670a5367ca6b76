"""The sandbox root keeps container file-system semantics (vmm_ffi.isolation.overlay): the
operations package managers and setup scripts perform on what the image shipped give the same
tree on the overlay root as on a plain copy of the image in the same namespaces (the
reference)."""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.rootfs import build_deb, extract_python_rootfs
from tests.vmm_ffi.conftest import Sandboxes, workload_lines
from vmm_ffi.isolation.namespace import DEFAULT_PATH
from vmm_ffi.params import BindMount, DirectoryRoot, IdShift

pytestmark = pytest.mark.slow
SUITE = Path(__file__).resolve().parents[1] / "support" / "fs_semantics"
ENV = {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
PACKAGE_FILES = {
    "/usr/bin/iii-fs-test": (0o755, "#!/bin/sh\necho iii-fs-test 1.0\n"),
    "/etc/iii-fs-test.conf": (0o644, "setting = 1\n"),
    "/usr/share/doc/iii-fs-test/copyright": (0o644, "public domain\n"),
    "/usr/lib/python3/dist-packages/iii_fs_test.py": (0o644, "VERSION = '1.0'\n"),
}


@pytest.fixture(scope="module")
def python_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_python_rootfs(tmp_path_factory.mktemp("image") / "rootfs")


def run_suite(sandboxes: Sandboxes, tmp_path: Path, **root: object) -> list[str]:
    # A launcher on shifted ids reads bind sources as its subordinate uid: keep them where
    # anyone may walk (tmp_path's parents are private to root).
    shared = Path(tempfile.mkdtemp(prefix="iii-fs-", dir="/tmp"))
    shared.chmod(0o755)
    deb = build_deb(shared, "iii-fs-test", PACKAGE_FILES)
    binds = [BindMount(source=str(deb), target="/mnt/iii-fs-test.deb"),
             BindMount(source=str(SUITE / "listing.py"), target="/mnt/listing.py"),
             BindMount(source=str(SUITE / "operations.sh"), target="/mnt/operations.sh")]
    code, status, log = sandboxes.run(["/bin/sh", "/mnt/operations.sh"], binds=binds,
                                      workdir="/", env=ENV, **root)
    shutil.rmtree(shared)
    lines = workload_lines(log)
    assert (code, status.exit_code) == (0, 0), "\n".join(lines[-20:])
    assert "operations: done" in lines
    return [line for line in lines if line.startswith("F\t")]


def test_overlay_root_equals_a_plain_copy(sandboxes: Sandboxes, python_rootfs: Path,
                                          tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", "--", str(python_rootfs), str(copy)], check=True)
    reference = run_suite(sandboxes, tmp_path / "ref", rootfs=DirectoryRoot(path=str(copy)))
    sandboxes.lower = python_rootfs
    overlay = run_suite(sandboxes, tmp_path / "ovl")
    assert len(reference) > 5000  # the whole image was listed, not an empty tree
    diff = list(difflib.unified_diff(reference, overlay, "plain copy", "overlay", lineterm="",
                                     n=0))
    assert not diff, "\n".join(diff[:60])
    # the package is really installed, the deleted trees really gone
    paths = {line.split("\t")[1] for line in overlay}
    assert "/usr/bin/iii-fs-test" in paths and "/usr/share/doc/iii-fs-test/copyright" in paths
    assert "/usr/share/common-licenses" not in paths and "/etc/debian_version" not in paths


@pytest.mark.skipif(os.geteuid() != 0, reason="id shifting is for root launchers")
def test_overlay_root_on_shifted_ids_equals_a_plain_copy(sandboxes: Sandboxes,
                                                         python_rootfs: Path,
                                                         tmp_path: Path) -> None:
    """The same suite with the sandbox's ids in a subordinate range (vmm_ffi.isolation.idmap):
    owners are what the sandbox sees, in the listing as on disk."""
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", "--", str(python_rootfs), str(copy)], check=True)
    reference = run_suite(sandboxes, tmp_path / "ref", rootfs=DirectoryRoot(path=str(copy)))
    sandboxes.lower = python_rootfs
    shifted = run_suite(sandboxes, tmp_path / "ovl",
                        id_shift=IdShift(uid_base=2_000_000, gid_base=2_000_000))
    diff = list(difflib.unified_diff(reference, shifted, "plain copy", "shifted overlay",
                                     lineterm="", n=0))
    assert not diff, "\n".join(diff[:60])
