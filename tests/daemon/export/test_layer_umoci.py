"""The exported layer, read by umoci, gives back exactly what the kernel's overlay showed.

The upper dir is written by a real overlayfs mount (the kernel decides whiteouts and opaque
markers, with and without ``userxattr``); the image is unpacked by umoci, an independent OCI
implementation, and its tree compared with the merged view captured before unmounting.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from daemon.export.image import (
    LAYER_MEDIA_TYPE,
    BuiltImage,
    Descriptor,
    build_image,
    write_oci_layout,
)
from daemon.export.layer import LayerBlob, write_layer
from daemon.export.upper import Kind, UpperDirError, read_upper

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting overlayfs needs root")
needs_umoci = pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed")

Tree = dict[str, tuple[object, ...]]


def snapshot(root: Path) -> Tree:
    """Every entry under ``root``: type, permission bits, owner, and content or link target."""
    out: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p), st.st_uid, st.st_gid)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode, st.st_uid, st.st_gid)
            else:
                out[rel] = ("file", mode, st.st_uid, st.st_gid, p.read_bytes())
    return out


def make_base(base: Path) -> None:
    for d in ("etc", "usr/bin", "opt/pkg/lib", "var/lib/cache/old", "srv", "workspace"):
        (base / d).mkdir(parents=True)
    (base / "etc/conf").write_text("base\n")
    (base / "etc/old").write_text("to be deleted\n")
    (base / "usr/bin/tool").write_text("#!/bin/sh\n")
    os.chmod(base / "usr/bin/tool", 0o755)
    (base / "opt/pkg/lib/a.so").write_bytes(b"\x7fELF")
    (base / "var/lib/cache/old/entry").write_text("stale\n")
    (base / "var/lib/cache/keep").write_text("stale too\n")
    (base / "srv/owned").write_text("owned\n")
    os.chown(base / "srv/owned", 1000, 1000)
    os.symlink("conf", base / "etc/conf.link")


def tar_layer(base: Path, dest: Path) -> Descriptor:
    """The base image's single layer, written by tarfile (not by the code under test)."""
    with tarfile.open(dest, "w:gz") as tar:
        for entry in sorted(base.iterdir()):
            tar.add(entry, arcname=entry.name)
    data = dest.read_bytes()
    return Descriptor(LAYER_MEDIA_TYPE, f"sha256:{hashlib.sha256(data).hexdigest()}", len(data))


def diff_id(layer: Path) -> str:
    import gzip
    return f"sha256:{hashlib.sha256(gzip.decompress(layer.read_bytes())).hexdigest()}"


def unpack_with_umoci(tmp_path: Path, image: BuiltImage, base_blob: Descriptor,
                      layer: LayerBlob) -> tuple[Path, Path]:
    """Write ``image`` (base blob at ``tmp_path/base.tar.gz`` + ``layer``) as an OCI layout and
    unpack it with umoci; return the layout and the unpacked rootfs."""
    layout, bundle = tmp_path / "oci", tmp_path / "bundle"
    write_oci_layout(layout, "latest", image, {base_blob.digest: tmp_path / "base.tar.gz",
                                               layer.digest: layer.path})
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)],
                   check=True, capture_output=True)
    return layout, bundle / "rootfs"


def change_through_overlay(merged: Path) -> None:
    """What an install step does: create, change, chmod, chown, delete, replace a directory."""
    (merged / "workspace/app.py").write_text("print('hi')\n")
    os.chmod(merged / "workspace/app.py", 0o750)
    (merged / "etc/conf").write_text("changed\n")
    os.chmod(merged / "usr/bin/tool", 0o700)
    os.chown(merged / "srv/owned", 1234, 4321)
    (merged / "etc/old").unlink()
    (merged / "etc/conf.link").unlink()
    shutil.rmtree(merged / "opt/pkg")
    shutil.rmtree(merged / "var/lib/cache")
    (merged / "var/lib/cache").mkdir()  # now opaque: nothing of the base shows through
    (merged / "var/lib/cache/fresh").write_text("new\n")
    (merged / "usr/local/bin").mkdir(parents=True)
    os.symlink("/workspace/app.py", merged / "usr/local/bin/run")
    os.link(merged / "workspace/app.py", merged / "usr/local/bin/app-copy")  # a hard link
    os.chmod(merged / "workspace", 0o1777)


@needs_root
@needs_umoci
# userxattr (the launcher's mount in a user namespace) implies redirect_dir and metacopy off and
# refuses them as explicit options; the older trusted.* form is told so explicitly.
@pytest.mark.parametrize("extra_opts", [",redirect_dir=off,metacopy=off", ",userxattr"])
def test_unpacked_image_equals_the_sandbox_view(tmp_path: Path, extra_opts: str) -> None:
    base, upper, work, merged = (tmp_path / n for n in ("base", "upper", "work", "merged"))
    for d in (base, upper, work, merged):
        d.mkdir()
    make_base(base)
    opts = f"lowerdir={base},upperdir={upper},workdir={work}" + extra_opts
    mount = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)],
                           check=False, capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"overlay mount with {opts!r} refused here: {mount.stderr.strip()}")
    try:
        change_through_overlay(merged)
        expected = snapshot(merged)
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    # the kernel wrote both kinds of marker: this test exercises both code paths
    changes = {c.path: c for c in read_upper(upper)}
    assert changes["etc/old"].kind is Kind.WHITEOUT and changes["opt/pkg"].kind is Kind.WHITEOUT
    assert changes["var/lib/cache"].opaque

    base_blob = tar_layer(base, tmp_path / "base.tar.gz")
    layer = write_layer(read_upper(upper), tmp_path / "layer.tar.gz")
    base_config = {"architecture": "amd64", "os": "linux",
                   "config": {"Env": ["PATH=/usr/bin:/bin", "III_URL=ws://leak"],
                              "Cmd": ["sh"]},
                   "rootfs": {"type": "layers", "diff_ids": [diff_id(tmp_path / "base.tar.gz")]}}
    image = build_image(base_config, [base_blob], layer, start="python3 app.py",
                        env={"MODE": "prod"}, labels={"dev.iii.worker.name": "w"})
    layout, rootfs = unpack_with_umoci(tmp_path, image, base_blob, layer)
    assert snapshot(rootfs) == expected
    # the hard link is a tar link entry, not a second copy: umoci recreates one inode
    with tarfile.open(layer.path) as tar:
        # the first name in path order holds the data, later ones link to it
        assert tar.getmember("usr/local/bin/app-copy").isreg()
        linked = tar.getmember("workspace/app.py")
        assert linked.islnk() and linked.linkname == "usr/local/bin/app-copy"
    one, two = (rootfs / p for p in ("workspace/app.py", "usr/local/bin/app-copy"))
    assert one.stat().st_ino == two.stat().st_ino and one.stat().st_nlink == 2
    config = json.loads((layout / "blobs/sha256" / image.config_digest[7:]).read_bytes())
    assert config["config"]["Entrypoint"] == ["/bin/sh", "-c", "python3 app.py"]
    assert config["config"]["WorkingDir"] == "/workspace"
    assert config["config"]["Env"] == ["PATH=/usr/bin:/bin", "MODE=prod"]
    assert "Cmd" not in config["config"]

    # re-export of the unchanged upper dir: byte-identical layer, same manifest digest
    again = write_layer(read_upper(upper), tmp_path / "layer2.tar.gz")
    assert again.digest == layer.digest
    assert build_image(base_config, [base_blob], again, start="python3 app.py",
                       env={"MODE": "prod"}, labels={"dev.iii.worker.name": "w"}
                       ).digest == image.digest
    if shutil.which("skopeo"):
        out = subprocess.run(["skopeo", "inspect", f"oci:{layout}:latest"], check=True,
                             capture_output=True, text=True)
        assert json.loads(out.stdout)["Digest"] == image.digest


def test_aufs_style_whiteout_files_are_read_as_deletions(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/.wh.gone").write_text("")
    assert [(c.path, c.kind) for c in read_upper(tmp_path)] == [
        ("etc", Kind.DIR), ("etc/gone", Kind.WHITEOUT)]


@pytest.mark.parametrize("name", ["trusted.overlay.redirect", "user.overlay.metacopy"])
def test_redirect_and_metacopy_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "d").mkdir()
    try:
        os.setxattr(tmp_path / "d", name, b"/elsewhere")
    except OSError as exc:
        pytest.skip(f"cannot set {name} here: {exc}")
    with pytest.raises(UpperDirError, match="redirect_dir or metacopy"):
        read_upper(tmp_path)


def test_a_socket_in_the_root_is_refused_with_the_path(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "run/app.sock"))
        with pytest.raises(UpperDirError, match="run/app.sock"):
            read_upper(tmp_path)
