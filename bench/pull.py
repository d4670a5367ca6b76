"""Pull + extract benchmark (issue 3), printed, never asserted.

Builds a ~150 MB (uncompressed), 5-layer image of incompressible and compressible files, pushes
it to a local ``docker-registry`` started here, then times, on the same image in the same run:

- ours:   ``ImageStore.pull`` into an empty cache (in a fresh subprocess each run);
- theirs: ``skopeo copy docker://… oci:DIR`` followed by ``umoci unpack --rootless``.

Prints medians of N runs, our/their ratio (goal ≤ 1.0, aim 0.5) and our peak RSS (goal ≤ 100 MiB).
Run: ``.venv/bin/python bench/pull.py [--runs N]`` or ``python -m bench pull``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.images import OCI_LAYER_GZIP, Blob, config_blob, push_image
from tests.support.registry import RegistryServer

LAYERS = 5
RANDOM_FILES, RANDOM_FILE_BYTES = 20, 1 << 20  # 20 MiB incompressible per layer
TEXT_FILES, TEXT_FILE_BYTES = 1000, 10 << 10  # 10 MiB compressible per layer
WORDS = ["sandbox", "worker", "image", "layer", "registry", "digest", "manifest", "overlay",
         "tarball", "python", "engine", "function", "invoke", "stream", "config"]
UNCOMPRESSED_MIB = LAYERS * (RANDOM_FILES * RANDOM_FILE_BYTES + TEXT_FILES * TEXT_FILE_BYTES) >> 20

OUR_PULL = """
import asyncio, json, resource, sys, time
from pathlib import Path
from daemon.images import ImageStore, RegistrySettings
started = time.monotonic()
store = ImageStore(Path(sys.argv[1]), RegistrySettings(docker_config=None))
image = asyncio.run(store.pull(sys.argv[2]))
print(json.dumps({"pull_s": time.monotonic() - started, "size": image.size_bytes,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def build_layer(path: Path, n: int, rng: random.Random) -> Blob:
    src = path.with_suffix(".d")
    for i in range(RANDOM_FILES):
        d = src / f"layer{n}/bin{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"blob{i}").write_bytes(os.urandom(RANDOM_FILE_BYTES))
    for i in range(TEXT_FILES):
        d = src / f"layer{n}/share/doc{i % 50}"
        d.mkdir(parents=True, exist_ok=True)
        words = rng.choices(WORDS, k=TEXT_FILE_BYTES // 7)
        (d / f"text{i}.txt").write_text(" ".join(words)[:TEXT_FILE_BYTES])
    with gzip.open(path, "wb", compresslevel=6) as gz:
        hashing = _HashingWriter(gz)
        with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            tf.add(src, arcname=".")
    shutil.rmtree(src)
    return Blob(OCI_LAYER_GZIP, path=path, diff_id="sha256:" + hashing.sha.hexdigest())


class _HashingWriter:
    """Hashes the uncompressed tar on its way into gzip: the layer's diff_id."""

    def __init__(self, inner: gzip.GzipFile) -> None:
        self.inner, self.sha = inner, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.inner.write(data)


def time_ours(registry_ref: str, tmp: Path, i: int) -> tuple[float, float, int]:
    home = tmp / f"ours-{i}"
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", OUR_PULL, str(home), registry_ref], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    wall = time.monotonic() - started
    report = json.loads(out.stdout)
    shutil.rmtree(home)
    return wall, report["pull_s"], report["maxrss_kib"]


def time_theirs(registry_ref: str, tmp: Path, i: int) -> float:
    layout, bundle = tmp / f"oci-{i}", tmp / f"bundle-{i}"
    started = time.monotonic()
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                    f"docker://{registry_ref}", f"oci:{layout}:bench"], check=True)
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:bench", str(bundle)],
                   check=True, capture_output=True)
    elapsed = time.monotonic() - started
    shutil.rmtree(layout)
    shutil.rmtree(bundle)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(3)
    with tempfile.TemporaryDirectory(prefix="iii-bench-pull-") as tmp_name, \
            RegistryServer() as registry:
        tmp = Path(tmp_name)
        started = time.monotonic()
        layers = [build_layer(tmp / f"layer{n}.tar.gz", n, rng) for n in range(LAYERS)]
        push_image(registry.access, "bench/pull", "latest", layers,
                   config_blob(diff_ids=[b.diff_id for b in layers]))
        compressed = sum(b.size for b in layers)
        print(f"image: {LAYERS} layers, {UNCOMPRESSED_MIB} MiB "
              f"uncompressed, {compressed >> 20} MiB compressed "
              f"(built and pushed in {time.monotonic() - started:.1f}s)")
        ref = f"{registry.host}/bench/pull:latest"
        ours_wall, ours_pull, rss, theirs = [], [], [], []
        for i in range(args.runs):  # interleaved, so both see the same machine state
            wall, pull_s, maxrss = time_ours(ref, tmp, i)
            ours_wall.append(wall)
            ours_pull.append(pull_s)
            rss.append(maxrss)
            theirs.append(time_theirs(ref, tmp, i))
        ours_med, theirs_med = statistics.median(ours_wall), statistics.median(theirs)
        print(f"ours   (process, median of {args.runs}): {ours_med:.2f}s  "
              f"[pull call alone {statistics.median(ours_pull):.2f}s]")
        print(f"theirs (skopeo copy + umoci unpack --rootless, median of {args.runs}): "
              f"{theirs_med:.2f}s")
        print(f"ratio ours/theirs: {ours_med / theirs_med:.2f}  (goal <= 1.0, aim 0.5)")
        print(f"peak RSS of our pull: {max(rss) / 1024:.0f} MiB  (goal <= 100 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
