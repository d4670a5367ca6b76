"""``iii worker export --to oci:DIR`` of a really prepared worker, checked by umoci and skopeo.

The install step creates, changes and deletes files of the debootstrap python base image inside
a real namespace sandbox; the exported image unpacked by umoci must equal the sandbox's view of
its root, which the kernel itself computes here by mounting the sandbox's overlay."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from daemon.export.kubernetes import API_VERSIONS
from daemon.sandboxes.env import PLACED_FILES
from tests.support.daemon import III_CLI, DaemonProcess, kill_sandboxes
from tests.support.engine import free_port, invoke_blocking
from tests.support.fixtures import AUTH_PASSWORD, AUTH_USER
from tests.support.registry import RegistryServer
from tests.support.wait import wait_until

pytestmark = [
    pytest.mark.skipif(shutil.which("umoci") is None or shutil.which("skopeo") is None,
                       reason="umoci and skopeo verify the export"),
]

STEPS = [
    "echo changed > /etc/motd",  # changed base file
    "rm /etc/debian_version",  # deleted base file
    # Removing a base *directory* needs the userxattr mount (the lead's branch): without it the
    # kernel answers EIO. Opaque dirs are covered against a real mount in
    # tests/daemon/export/test_layer_umoci.py until then.
    "rm /usr/share/doc/mawk/copyright && echo new > /usr/share/doc/NOTE",
    "mkdir -p /opt/tool && printf '#!/bin/sh\\necho tool\\n' > /opt/tool/run",
    "chmod 750 /opt/tool/run && ln -s /opt/tool/run /usr/local/bin/tool",
    "chmod 700 /etc/hostname",  # metadata-only change
]
INSTALL = " && ".join(STEPS)


def manifest(base: str) -> str:
    return f"""name: exp
runtime:
  kind: python
  base_image: {base}
scripts:
  install: "{INSTALL}"
  start: python3 worker.py
env:
  GREETING: Hello
  TOKEN: "${{HOME}}"
"""


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if rel.startswith(".oci-") or rel == "var/.iii-prepared":
                continue  # the cache's own bookkeeping files are not part of the image
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p), st.st_uid, st.st_gid)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode, st.st_uid, st.st_gid)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", mode, st.st_uid, st.st_gid,
                            hashlib.sha256(p.read_bytes()).hexdigest())
            else:
                out[rel] = ("special", st.st_mode, st.st_rdev)
    return out


def normalized(tree: dict[str, tuple[object, ...]], touched: set[str]
               ) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for rel, v in tree.items():
        if rel in touched:
            out[rel] = v
        elif v[0] == "file":
            out[rel] = ("file", int(str(v[1])) & ~0o6000, v[4])
        elif v[0] == "dir":
            out[rel] = ("dir", int(str(v[1])) & ~0o6000)
        elif v[0] == "link":
            out[rel] = ("link", v[1])
    return out


def sandbox_view(lower: Path, upper: Path, tmp: Path) -> dict[str, tuple[object, ...]]:
    """The sandbox's root as the kernel merges it (read-only mount of a copy of the upper dir's
    overlay, with userxattr when the launcher wrote user.* markers)."""
    merged, work = tmp / "merged", tmp / "ovl-work"
    merged.mkdir()
    work.mkdir()
    users = any(name.startswith("user.overlay.")
                for d, _, _ in os.walk(upper) for name in os.listxattr(d))
    opts = f"lowerdir={upper}:{lower}" + (",userxattr" if users else "")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], check=True)
    try:
        return snapshot(merged)
    finally:
        subprocess.run(["umount", str(merged)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting the overlay to compare needs root")
def test_export_to_oci_layout_equals_the_sandbox_view(
        daemon_factory, python_image: str, iii_home: Path,
        tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "iii.worker.yaml").write_text(manifest(python_image))
    (project / "worker.py").write_text("print('hello')\n")
    (project / "requirements.txt").write_text("")
    daemon = daemon_factory()
    added = daemon.iii("worker", "add", str(project))
    assert added.returncode == 0, added.stderr

    layout = tmp_path / "image"
    out = daemon.json("worker", "export", "exp", "--to", f"oci:{layout}:v1")
    digest = out["digest"]
    assert digest.startswith("sha256:") and out["destination"] == f"oci:{layout}:v1"

    inspect = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{layout}:v1"], check=True,
                                        capture_output=True, text=True).stdout)
    assert inspect["Digest"] == digest
    assert inspect["Labels"]["dev.iii.worker.name"] == "exp"
    assert inspect["Labels"]["dev.iii.worker.fingerprint"]
    assert "GREETING=Hello" in inspect["Env"]
    assert not any(e.startswith(("TOKEN=", "III_")) for e in inspect["Env"])

    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:v1", str(bundle)], check=True,
                   capture_output=True)
    unpacked = snapshot(bundle / "rootfs")
    [lower] = [p for p in (iii_home / "rootfs").iterdir()
               if p.is_dir() and not p.name.startswith(".")]
    expected = sandbox_view(lower, iii_home / "managed/exp/upper", tmp_path)
    assert "etc/debian_version" not in unpacked and "usr/share/doc/NOTE" in unpacked
    assert "usr/share/doc/mawk/copyright" not in unpacked
    # Paths install touched (in the upper dir) must match exactly. Base paths keep the base
    # layer's own metadata in the image (reused by digest), which the rootfs cache flattens on
    # purpose (daemon/images/extract.py: no owners, no setuid/setgid, no device nodes).
    # The host files the daemon places at every start are not the worker's: the image keeps
    # the base's (ARCHITECTURE.md, daemon/sandboxes/env.py PLACED_FILES).
    assert (iii_home / "managed/exp/upper/etc/resolv.conf").is_file()
    base_view = snapshot(lower)
    for placed in PLACED_FILES:
        assert unpacked.get(placed) == base_view.get(placed), placed
        expected.pop(placed, None)
        unpacked.pop(placed, None)
    touched = set(snapshot(iii_home / "managed/exp/upper")) - set(PLACED_FILES)
    assert normalized(unpacked, touched) == normalized(expected, touched)
    assert {k: v for k, v in unpacked.items() if k in touched} == \
        {k: v for k, v in expected.items() if k in touched}

    # unchanged worker: same digest again
    again = daemon.json("worker", "export", "exp", "--to", f"oci:{tmp_path / 'again'}")
    assert again["digest"] == digest


def run_on_tty(env: dict[str, str], *args: str, timeout: float = 120.0) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdout/stderr; its exit code and all it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([III_CLI, *args], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env=env)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        return proc.wait(10), out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_export_refuses_an_unknown_worker_in_one_line(daemon_factory, tmp_path: Path) -> None:
    daemon = daemon_factory()
    res = daemon.iii("worker", "export", "ghost", "--to", f"oci:{tmp_path / 'x'}")
    assert res.returncode == 1
    assert res.stderr.strip() == "error: worker 'ghost' not found; see `iii worker list`"
    assert "Traceback" not in res.stderr and not (tmp_path / "x").exists()
    # `--json` takes the typer-free path (client/cli.py): the same one line
    fast = daemon.iii("worker", "export", "ghost", "--json", "--to", f"oci:{tmp_path / 'x'}")
    assert (fast.returncode, fast.stderr, fast.stdout) == (1, res.stderr, "")

    added = daemon.iii("worker", "add", "iii-http")  # a config worker: nothing to export
    assert added.returncode == 0, added.stderr
    res = daemon.iii("worker", "export", "iii-http", "--to", f"oci:{tmp_path / 'x'}")
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1
    assert "only workers added from a project directory" in res.stderr
    assert not (tmp_path / "x").exists()
    res = daemon.iii("worker", "export", "iii-http", "--to", "oci:")
    assert res.returncode == 1 and "Traceback" not in res.stderr


def test_push_reuses_base_blobs_and_re_export_uploads_nothing(
        daemon_factory, python_image: str, registry, auth_registry, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "iii.worker.yaml").write_text(manifest(python_image))
    (project / "worker.py").write_text("print('hello')\n")
    daemon = daemon_factory()
    added = daemon.iii("worker", "add", str(project))
    assert added.returncode == 0, added.stderr

    # On a terminal: rich progress bars for building the layer and pushing it
    code, screen = run_on_tty(daemon.env, "worker", "export", "exp", "--to",
                              f"{registry.host}/team/tty:1")
    assert code == 0, screen
    assert "━" in screen and "layer:" in screen and "push:" in screen, screen
    assert "exported worker 'exp'" in screen
    # Not a terminal, no --json: one plain line per step, then the result
    plain = daemon.iii("worker", "export", "exp", "--to", f"{registry.host}/team/plain:1")
    assert plain.returncode == 0, plain.stderr
    assert "push: tagged" in plain.stdout and "━" not in plain.stdout

    target = f"{registry.host}/team/exp:v1"
    first = daemon.json("worker", "export", "exp", "--to", target)  # --json: the result only
    # the base layer is mounted from iii-test/python, never uploaded; the new layer is
    assert first["blobs_reused"] == 1 and first["blobs_uploaded"] == 1
    assert first["destination"] == f"{registry.host}/team/exp@{first['digest']}"
    seen = json.loads(subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{target}"], check=True,
        capture_output=True, text=True).stdout)
    assert seen["Digest"] == first["digest"]

    base_reads = registry.requests("GET", "/iii-test/python/")
    assert base_reads > 0  # the first export read them there
    again = daemon.json("worker", "export", "exp", "--to", target)
    assert again["digest"] == first["digest"]
    # unchanged: the base's manifest and config come from beside the sandbox, not its registry
    assert registry.requests("GET", "/iii-test/python/") == base_reads
    assert again["blobs_uploaded"] == 0 and again["blobs_reused"] == 2

    # Kubernetes YAML for the last push: validated by the real schemas, secrets only in the
    # Secret, a loopback engine refused with the reason
    config = daemon.home / "config.yaml"
    config.write_text(config.read_text().replace(
        "name: exp\n", "name: exp\n    config:\n      api_token: s3cret-value\n"))
    wait_until(lambda: "API_TOKEN" in daemon.iii(  # hand edits are read within a second
        "worker", "export", "exp", "--kubernetes", "--engine-url",
        "ws://iii-engine.iii:49134").stdout, 10, "the hand edit to be read")
    out = tmp_path / "exp.yaml"
    wrote = daemon.iii("worker", "export", "exp", "--kubernetes", "--engine-url",
                       "ws://iii-engine.iii:49134", "--runtime-class", "kata", "--replicas", "3",
                       "-o", str(out))
    assert wrote.returncode == 0, wrote.stderr
    docs = list(YAML(typ="safe").load_all(out.read_text()))
    for version in API_VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)
    deployment, secret = docs
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == first["destination"]
    assert pod["runtimeClassName"] == "kata" and deployment["spec"]["replicas"] == 3
    assert "s3cret-value" not in json.dumps(deployment)
    assert secret["stringData"] == {"API_TOKEN": "s3cret-value"}
    loopback = daemon.iii("worker", "export", "exp", "--kubernetes")
    assert loopback.returncode == 1 and "loopback" in loopback.stderr
    assert "--engine-url" in loopback.stderr

    # a registry that refuses the push: one line, exit 1, and no tag was written
    refused = f"{auth_registry.host}/team/exp:v1"
    res = daemon.iii("worker", "export", "exp", "--to", refused)
    assert res.returncode == 1, res.stdout
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert "requires authentication" in res.stderr and "docker login" in res.stderr
    look = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--creds",
                           f"{AUTH_USER}:{AUTH_PASSWORD}", f"docker://{refused}"],
                          check=False, capture_output=True, text=True)
    assert look.returncode != 0 and "manifest unknown" in look.stderr


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python-worker"
INSTALL_LOG = "/var/log/iii-install.log"


def test_exported_image_runs_as_a_container_worker_without_installing_again(
        daemon_factory, engine_factory, python_image: str, registry, tmp_path: Path) -> None:
    """SPEC §14: push the prepared example worker (real SDK from PyPI), then a second daemon on
    a clean III_HOME adds the image by reference; it registers with the stand-in engine and
    answers through it. The install step appends a line to a log inside the sandbox and the
    worker reports the line count: one line means the install ran once, on the first machine."""
    project = tmp_path / "proj"
    shutil.copytree(EXAMPLE, project)
    source = project / "worker.py"
    counted = source.read_text().replace(
        'return {"message": f"{greeting}, {name}!"}',
        f'runs = len(open("{INSTALL_LOG}").read().splitlines())\n'
        '    return {"message": f"{greeting}, {name}! (installed {runs}x)"}')
    assert counted != source.read_text()
    source.write_text(counted)
    (project / "iii.worker.yaml").write_text(
        f"name: exp\nruntime:\n  kind: python\n  entry: worker.py\n  base_image: {python_image}\n"
        f"scripts:\n  install: pip install -r requirements.txt && echo ran >> {INSTALL_LOG}\n"
        "env:\n  GREETING: Hello\n")
    engine = engine_factory()
    # The first machine has no engine: the worker is prepared by add, never started there.
    first = daemon_factory(III_URL=f"ws://127.0.0.1:{free_port()}")
    added = first.iii("worker", "add", str(project))
    assert added.returncode == 0, added.stderr
    ref = f"{registry.host}/team/exported-worker:v1"
    pushed = first.json("worker", "export", "exp", "--to", ref)
    first.stop()

    with tempfile.TemporaryDirectory(prefix="iii-", dir="/tmp") as clean:
        home = Path(clean)
        second = DaemonProcess(home, III_URL=engine.url).start()
        try:
            wait_until(lambda: second.json("daemon", "status")["engine"]["reachable"], 10,
                       "the engine to be reachable")
            added = second.json("worker", "add", ref)
            assert added["started"] is True, added
            worker = second.worker("exported-worker")
            assert worker["type"] == "oci" and worker["isolation"] == "namespace"
            wait_until(lambda: second.worker("exported-worker")["engine_registered"] is True,
                       60, "the engine to list the exported worker")
            answer = invoke_blocking(engine.url, "examples::greet", {"name": "k8s"})
            assert answer == {"message": "Hello, k8s! (installed 1x)"}
            # pulled by digest-checked blobs: the cached image is the one pushed
            [cached] = second.json("image", "list")["images"]
            assert cached["digest"] == pushed["digest"]
            # and nothing ran install in the second sandbox: no copy-up of the install log
            upper = home / "managed/exported-worker/upper"
            assert not (upper / INSTALL_LOG.lstrip("/")).exists()
            log = (home / "managed/exported-worker/logs/worker.log").read_text()
            assert "running install" not in log and "registered examples::greet" in log
        finally:
            second.stop()
            kill_sandboxes(home)


def layer_names(layout: Path) -> list[str]:
    """Entry names of the last (exported) layer of the only image in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs/sha256"
    manifest_doc = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_bytes())
    with tarfile.open(blobs / manifest_doc["layers"][-1]["digest"][7:]) as tar:
        return tar.getnames()


@pytest.mark.skipif(os.geteuid() != 0, reason="the full registry's tmpfs needs root")
def test_export_prepares_first_and_refuses_failed_installs_and_a_full_registry(
        daemon_factory, python_image: str, iii_home: Path, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "worker.py").write_text("print('hello')\n")
    yaml_text = (f"name: fresh\nruntime:\n  kind: python\n  base_image: {python_image}\n"
                 "scripts:\n  install: {install}\n  start: sleep 600\n")
    (project / "iii.worker.yaml").write_text(yaml_text.format(
        install="head -c 3000000 /dev/urandom > /opt/installed"))
    daemon = daemon_factory()
    # A worker written into config.yaml by hand: known, never prepared. Export prepares it.
    (iii_home / "config.yaml").write_text(
        f"workers:\n  - name: fresh\n    worker_path: {project}\n    watch: false\n")
    wait_until(lambda: any(w["name"] == "fresh" for w in daemon.json("worker", "list")["workers"]),
               10, "the hand edit to be read")
    assert not (iii_home / "managed/fresh/upper").exists()
    first = tmp_path / "first"
    done = daemon.json("worker", "export", "fresh", "--to", f"oci:{first}")
    assert (iii_home / "managed/fresh/upper/var/.iii-prepared").is_file()
    names = layer_names(first)
    assert "opt/installed" in names and "workspace/worker.py" in names
    assert done["size"] > 3_000_000  # random bytes do not compress
    installed_at = (iii_home / "managed/fresh/upper/opt/installed").stat().st_mtime_ns

    # A running worker is exported as it runs: not prepared again, the same image
    started = daemon.iii("worker", "start", "fresh")
    assert started.returncode == 0, started.stderr
    assert daemon.worker("fresh")["status"] == "running"
    (project / "worker.py").write_text("print('edited')\n")  # watch is off: not synced yet
    running = daemon.json("worker", "export", "fresh", "--to", f"oci:{tmp_path / 'running'}")
    assert running["digest"] == done["digest"]
    assert daemon.worker("fresh")["status"] == "running"
    assert daemon.json("worker", "stop", "fresh")["status"] == "stopped"
    # stopped again: export syncs the edit first (install does not run: its inputs are the same)
    synced = daemon.json("worker", "export", "fresh", "--to", f"oci:{tmp_path / 'synced'}")
    assert synced["digest"] != done["digest"]
    assert (iii_home / "managed/fresh/upper/opt/installed").stat().st_mtime_ns == installed_at

    # A registry whose storage is full: one line naming the registry, and no tag.
    full = RegistryServer()
    full.storage.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full.storage)],
                   check=True)
    try:
        full.start()
        res = daemon.iii("worker", "export", "fresh", "--to", f"{full.host}/team/fresh:v1")
        assert res.returncode == 1, res.stdout
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert res.stderr.startswith("error: ") and full.host in res.stderr, res.stderr
        assert "out of disk space" in res.stderr and "nothing was tagged" in res.stderr
        assert "Traceback" not in res.stderr
        look = subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                               f"docker://{full.host}/team/fresh:v1"],
                              check=False, capture_output=True, text=True)
        assert look.returncode != 0 and "manifest unknown" in look.stderr, look.stderr
    finally:
        full.stop()
        subprocess.run(["umount", "--lazy", str(full.storage)], check=False)
        shutil.rmtree(full.dir, ignore_errors=True)

    # The install now fails: export runs it (the manifest changed), says so, exports nothing.
    (project / "iii.worker.yaml").write_text(yaml_text.format(install="echo broken >&2; exit 7"))
    second = tmp_path / "second"
    res = daemon.iii("worker", "export", "fresh", "--to", f"oci:{second}")
    assert res.returncode == 1, res.stdout
    errors = [ln for ln in res.stderr.splitlines() if not ln.startswith("  | ")]
    assert errors == ["error: install script failed with exit code 7"], res.stderr
    assert "  | broken" in res.stderr
    assert not second.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="a full copy keeping the image's owners needs root")
def test_a_copy_mode_sandbox_exports_by_diffing_against_its_image(
        daemon_factory, python_image: str, iii_home: Path, tmp_path: Path) -> None:
    """A host without overlayfs gets full-copy sandbox roots (SPEC §7). This one is made the way
    the provisioner makes them (``cp -a`` of the cached image, then the mode file), for a worker
    written into config.yaml; export prepares it (install runs in the copy) and diffs it."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "iii.worker.yaml").write_text(manifest(python_image))
    (project / "worker.py").write_text("print('hello')\n")
    daemon = daemon_factory()
    pulled = daemon.json("image", "pull", python_image)
    sandbox = iii_home / "managed/exp"
    sandbox.mkdir(parents=True)
    subprocess.run(["cp", "-a", "--", pulled["path"], str(sandbox / "rootfs")], check=True)
    (sandbox / "root-mode").write_text("copy")
    (iii_home / "config.yaml").write_text(f"workers:\n  - name: exp\n    worker_path: {project}\n")
    wait_until(lambda: any(w["name"] == "exp" for w in daemon.json("worker", "list")["workers"]),
               10, "the hand edit to be read")

    layout = tmp_path / "image"
    daemon.json("worker", "export", "exp", "--to", f"oci:{layout}")
    assert not (sandbox / "upper").exists()  # it really ran on the copy
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)], check=True,
                   capture_output=True)
    unpacked, root = snapshot(bundle / "rootfs"), snapshot(sandbox / "rootfs")
    for tree in (unpacked, root):
        for placed in PLACED_FILES:
            tree.pop(placed, None)
    assert "etc/debian_version" not in unpacked and "usr/share/doc/mawk/copyright" not in unpacked
    for path in ("etc/motd", "etc/hostname", "opt/tool/run", "usr/local/bin/tool",
                 "usr/share/doc/NOTE", "workspace/worker.py"):
        assert unpacked[path] == root[path], path
    # everything else: same tree (the base layer keeps owners and setuid bits the cache drops)
    assert normalized(unpacked, set()) == normalized(root, set())
    names = layer_names(layout)
    assert "usr/bin/python3" not in names and len(names) < 100  # a diff, not the whole root
