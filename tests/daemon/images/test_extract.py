from __future__ import annotations

import gzip
import logging
import os
import stat
import time
from pathlib import Path

import pytest

from daemon.images.errors import LayerError
from daemon.images.extract import LayerExtractor
from daemon.images.models import ExtractLimits
from tests.support.images import Blob, TarEntry, busybox_layers, layer_blob, tar_bytes


def blob_file(tmp_path: Path, blob: Blob, name: str) -> Path:
    path = tmp_path / f"{name}.blob"
    assert blob.data is not None
    path.write_bytes(blob.data)
    return path


def extract(tmp_path: Path, blobs: list[Blob], limits: ExtractLimits | None = None) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    extractor = LayerExtractor(root, limits or ExtractLimits())
    for i, blob in enumerate(blobs):
        extractor.apply(blob_file(tmp_path, blob, str(i)), f"layer {i + 1}")
    extractor.finish()
    return root


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_busybox_layers_apply_whiteouts_links_and_modes(tmp_path: Path, compression: str) -> None:
    root = extract(tmp_path, busybox_layers(compression))
    assert os.readlink(root / "bin/sh") == "busybox"
    assert os.access(root / "bin/busybox", os.X_OK)
    assert (root / "etc/motd").read_text() == "v2\n"  # overwritten by layer 2
    assert not (root / "etc/gone").exists()  # whiteout
    assert sorted(os.listdir(root / "opaque")) == ["new"]  # opaque dir
    assert (root / "data/hard").stat().st_ino == (root / "data/orig").stat().st_ino
    assert os.readlink(root / "lib") == "usr/lib"
    assert (root / "usr/lib/libx.so").read_bytes().startswith(b"\x7fELF")
    assert stat.S_ISFIFO((root / "etc/fifo").lstat().st_mode)
    assert (root / "etc/readonly").read_text() == "ro2\n"
    assert stat.S_IMODE((root / "etc/readonly").stat().st_mode) == 0o444
    assert stat.S_IMODE((root / "usr/bin/suid").stat().st_mode) == 0o755  # setuid stripped
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777  # sticky kept
    assert stat.S_IMODE((root / "data").stat().st_mode) == 0o750
    assert int((root / "etc/motd").stat().st_mtime) == 1_700_000_000
    assert int((root / "data").stat().st_mtime) == 1_700_000_000


def test_relative_symlink_inside_root_is_followed_within_root(tmp_path: Path) -> None:
    root = extract(tmp_path, [layer_blob([
        TarEntry("usr/lib", "dir"), TarEntry("lib", "symlink", target="usr/lib"),
        TarEntry("lib/libz.so", data=b"z"), TarEntry("usr/share", "dir"),
        TarEntry("usr/doc", "symlink", target="../usr/share/./"),
        TarEntry("usr/doc/readme", data=b"r"),
    ])])
    assert (root / "usr/lib/libz.so").read_bytes() == b"z"
    assert (root / "usr/share/readme").read_bytes() == b"r"
    assert os.path.islink(root / "lib")


EVIL_LAYERS = [
    ([TarEntry("../../etc/passwd", data=b"pwned")], "contains '..'"),
    ([TarEntry("/etc/passwd", data=b"pwned")], "absolute path"),
    ([TarEntry("evil", "symlink", target="/outside"), TarEntry("evil/passwd", data=b"pwned")],
     "through symlink 'evil' -> '/outside'"),
    ([TarEntry("up", "symlink", target="../../../outside"), TarEntry("up/x", data=b"pwned")],
     "outside the image root"),
    ([TarEntry("a", "dir"), TarEntry("a/loop", "symlink", target="loop"),
      TarEntry("a/loop/x", data=b"x")], "outside the image root"),
    ([TarEntry("shadow", "hardlink", target="/etc/shadow")], "absolute path"),
    ([TarEntry("shadow", "hardlink", target="../outside/secret")], "contains '..'"),
    ([TarEntry("ghost", "hardlink", target="etc/missing")], "not an existing file"),
    ([TarEntry("evil", "symlink", target="/outside"),
      TarEntry("link", "hardlink", target="evil/secret")], "outside the image root"),
]


@pytest.mark.parametrize(("entries", "message"), EVIL_LAYERS, ids=[
    "dotdot", "absolute", "abs-symlink-write", "rel-symlink-escape", "symlink-loop",
    "hardlink-absolute", "hardlink-dotdot", "hardlink-missing", "hardlink-via-symlink"])
def test_unsafe_entries_are_rejected_and_nothing_escapes(
        tmp_path: Path, entries: list[TarEntry], message: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("keep")
    (tmp_path / "sub").mkdir()
    root = tmp_path / "sub" / "root"
    root.mkdir()
    blob = blob_file(tmp_path, layer_blob(entries), "evil")
    with pytest.raises(LayerError, match="layer 1") as info:
        LayerExtractor(root, ExtractLimits()).apply(blob, "layer 1")
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_text() == "keep"


def test_device_nodes_are_skipped_with_a_warning(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        root = extract(tmp_path, [layer_blob([TarEntry("dev", "dir"),
                                              TarEntry("dev/null", "chr", mode=0o666)])])
    assert os.listdir(root / "dev") == []
    assert "skipped 1 device node" in caplog.text


def test_entry_limit_gives_a_clear_error(tmp_path: Path) -> None:
    entries = [TarEntry(f"f{i}", data=b"") for i in range(20)]
    with pytest.raises(LayerError, match="more than the limit of 10 entries"):
        extract(tmp_path, [layer_blob(entries)], ExtractLimits(max_entries=10))


@pytest.mark.parametrize("files", [1, 64], ids=["one-huge-file", "many-files"])
def test_gzip_bomb_stops_at_the_byte_limit(tmp_path: Path, files: int) -> None:
    size = (64 << 20) // files
    blob = Blob("application/vnd.oci.image.layer.v1.tar+gzip", gzip.compress(
        tar_bytes([TarEntry(f"zero{i}", data=bytes(size)) for i in range(files)]), 9))
    assert blob.size < 1 << 20  # a real bomb: >64x expansion
    with pytest.raises(LayerError, match=f"larger than the limit of {16 << 20} uncompressed"):
        extract(tmp_path, [blob], ExtractLimits(max_bytes=16 << 20))


def test_corrupt_layer_is_a_clear_error(tmp_path: Path) -> None:
    good = layer_blob([TarEntry("x", data=os.urandom(4096))])
    assert good.data is not None
    bad = Blob(good.media_type, good.data[: len(good.data) // 2])
    with pytest.raises(LayerError, match="layer 1: not a valid"):
        extract(tmp_path, [bad])


@pytest.mark.slow
def test_100k_entry_layer_extracts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entries = [TarEntry(f"d{i // 1000}", "dir") for i in range(0, 100_000, 1000)]
    entries += [TarEntry(f"d{i // 1000}/f{i}", data=b"x") for i in range(100_000)]
    blob = layer_blob(entries)
    started = time.monotonic()
    root = extract(tmp_path, [blob])
    elapsed = time.monotonic() - started
    assert sum(len(os.listdir(root / f"d{d}")) for d in range(100)) == 100_000
    with capsys.disabled():
        print(f"\n100k-entry layer extracted in {elapsed:.1f}s")
