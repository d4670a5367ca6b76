"""A full-copy sandbox root (reflink/copy modes, no overlay) exported by diffing it against its
image: umoci's unpack of base + layer must equal the root itself."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from daemon.export.diff import diff_root
from daemon.export.image import build_image
from daemon.export.layer import write_layer
from daemon.export.upper import Kind
from tests.daemon.export.test_layer_umoci import (
    change_through_overlay,
    diff_id,
    make_base,
    needs_root,
    needs_umoci,
    snapshot,
    tar_layer,
    unpack_with_umoci,
)


@needs_root  # the base has a file owned by another user, kept by `cp -a`
@needs_umoci
def test_a_copied_root_diffed_against_its_image_unpacks_to_the_same_tree(tmp_path: Path
                                                                         ) -> None:
    base, root = tmp_path / "base", tmp_path / "root"
    base.mkdir()
    make_base(base)
    (base / "etc/same-size").write_text("aaaa\n")
    subprocess.run(["cp", "-a", "--", str(base), str(root)], check=True)  # the provisioner's copy
    time.sleep(0.05)  # past the filesystem's timestamp granularity
    copied_ns = time.time_ns()
    time.sleep(0.05)
    change_through_overlay(root)  # the same install as the overlay test, on the plain copy
    # a write that keeps size and mtime: only the ctime tells, and the bytes are compared
    same = root / "etc/same-size"
    st = same.stat()
    same.write_text("bbbb\n")
    os.utime(same, ns=(st.st_atime_ns, st.st_mtime_ns))
    expected = snapshot(root)

    changes = diff_root(root, base, copied_ns)
    by_path = {c.path: c for c in changes}
    assert by_path["etc/old"].kind is Kind.WHITEOUT and by_path["opt/pkg"].kind is Kind.WHITEOUT
    assert by_path["var/lib/cache/old"].kind is Kind.WHITEOUT  # the replaced directory
    assert by_path["etc/same-size"].kind is Kind.FILE
    assert "usr/bin" not in by_path and "opt/pkg/lib/a.so" not in by_path  # unchanged / below
    hard = [c for c in changes if c.kind is Kind.HARDLINK]
    assert [(c.path, c.link_target) for c in hard] == [("workspace/app.py",
                                                        "usr/local/bin/app-copy")]

    base_blob = tar_layer(base, tmp_path / "base.tar.gz")
    layer = write_layer(changes, tmp_path / "layer.tar.gz")
    base_config = {"architecture": "amd64", "os": "linux", "config": {},
                   "rootfs": {"type": "layers", "diff_ids": [diff_id(tmp_path / "base.tar.gz")]}}
    image = build_image(base_config, [base_blob], layer, start="true", env={}, labels={})
    layout, rootfs = unpack_with_umoci(tmp_path, image, base_blob, layer)
    assert snapshot(rootfs) == expected
    # deterministic: the same root diffs to the same layer
    again = write_layer(diff_root(root, base, copied_ns), tmp_path / "again.tar.gz")
    assert again.digest == layer.digest
    assert json.loads((layout / "index.json").read_text())["manifests"][0]["digest"] == \
        image.digest


def test_export_reads_a_copy_mode_sandbox_by_diffing_and_an_overlay_one_by_its_upper_dir(
        tmp_path: Path) -> None:
    from daemon.export.service import read_changes
    from daemon.sandboxes.layout import RootMode, SandboxLayout
    from daemon.sandboxes.provision import ROOT_MODE_FILE

    image = tmp_path / "image"
    (image / "etc").mkdir(parents=True)
    (image / "etc/keep").write_text("k\n")
    (image / "etc/gone").write_text("g\n")
    copied = SandboxLayout(tmp_path, "copied")
    copied.dir.mkdir(parents=True)
    subprocess.run(["cp", "-a", "--", str(image), str(copied.rootfs)], check=True)
    time.sleep(0.05)
    (copied.dir / ROOT_MODE_FILE).write_text(RootMode.COPY.value)
    (copied.rootfs / "etc/gone").unlink()
    (copied.rootfs / "etc/new").write_text("n\n")
    assert [(c.path, c.kind) for c in read_changes(copied, image)] == [
        ("etc/gone", Kind.WHITEOUT), ("etc/new", Kind.FILE)]

    overlay = SandboxLayout(tmp_path, "overlay")
    (overlay.upper / "etc").mkdir(parents=True)
    (overlay.dir / ROOT_MODE_FILE).write_text(RootMode.OVERLAY.value)
    (overlay.upper / "etc/new").write_text("n\n")
    assert [(c.path, c.kind) for c in read_changes(overlay, image)] == [
        ("etc", Kind.DIR), ("etc/new", Kind.FILE)]
