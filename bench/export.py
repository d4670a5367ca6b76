"""Export benchmark (issue 13), printed, never asserted.

Prepares a worker on the debootstrap python base image (pushed to a local ``docker-registry``
started here) whose install writes ~20 MiB into the sandbox, then times, in the same run:

- first export: ``iii worker export NAME --to REGISTRY/bench/exp:1`` (base layer mounted from
  the base image's repository, the new layer uploaded);
- re-export with no change, median of 5 (goal ≤ 10% of the first: every blob is already
  there, the layer is cached, the base manifest is read from beside the sandbox), with the
  cost of a bare CLI start + one request beside it;
- baseline: ``skopeo copy`` of the base image to another repository of the same registry
  (what moving the base alone costs);

and prints the added layer's compressed size against the sandbox upper dir's disk usage.
Run: ``.venv/bin/python bench/export.py`` or ``python -m bench export`` (needs root or a
cached python image; see tests/support/images.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.sandboxes.layout import disk_usage
from tests.support.daemon import III_CLI, DaemonProcess
from tests.support.images import build_python_image, push_image
from tests.support.registry import RegistryServer

INSTALL = ("mkdir -p /opt/deps && head -c 10485760 /dev/urandom > /opt/deps/blob && "
           "seq 1 1500000 > /opt/deps/text && rm /etc/debian_version")
REPEATS = 5  # unchanged re-exports; the median is reported


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, dict[str, object]]:
    started = time.monotonic()
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    return elapsed, json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}


def main() -> int:
    built = build_python_image()
    with RegistryServer() as registry, tempfile.TemporaryDirectory(prefix="iii-", dir="/tmp") as t:
        tmp = Path(t)
        push_image(registry.access, "bench/python", "base", [built.layer], built.config)
        base = f"{registry.host}/bench/python:base"
        project = tmp / "proj"
        project.mkdir()
        (project / "worker.py").write_text("print('hi')\n")
        (project / "iii.worker.yaml").write_text(
            f"name: exp\nruntime:\n  kind: python\n  base_image: {base}\n"
            f"scripts:\n  install: \"{INSTALL}\"\n  start: python3 worker.py\n")
        home = tmp / "home"
        home.mkdir()
        daemon = DaemonProcess(home).start()
        try:
            env = daemon.env
            subprocess.run([III_CLI, "worker", "add", str(project)], env=env, check=True,
                           capture_output=True)
            target = f"{registry.host}/bench/exp:1"
            first_s, first = timed([III_CLI, "worker", "export", "exp", "--to", target,
                                    "--json"], env)
            runs = [timed([III_CLI, "worker", "export", "exp", "--to", target, "--json"], env)
                    for _ in range(REPEATS)]
            again_s, again = sorted(runs, key=lambda r: r[0])[REPEATS // 2]  # the median
            floor_s, _ = timed([III_CLI, "worker", "list", "--json"], env)
            upper = disk_usage(home / "managed/exp/upper")
        finally:
            daemon.stop()
        started = time.monotonic()
        subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                        f"docker://{base}", f"docker://{registry.host}/bench/copy:1"],
                       check=True, capture_output=True)
        skopeo_s = time.monotonic() - started
    mib = 1 << 20
    print(f"base image layer: {built.layer.size / mib:.0f} MiB compressed")
    print(f"first export (push):      {first_s:6.2f} s  uploaded {first.get('blobs_uploaded')} "
          f"reused {first.get('blobs_reused')}")
    print(f"re-export, no change:     {again_s:6.3f} s  uploaded {again.get('blobs_uploaded')} "
          f"reused {again.get('blobs_reused')}  = {again_s / first_s:.1%} of first (goal ≤ 10%)")
    print(f"  (of which a CLI start + one request, `iii worker list --json`: {floor_s:.2f} s)")
    print(f"skopeo copy of the base:  {skopeo_s:6.2f} s  (baseline)")
    print(f"added layer {int(str(first.get('size', 0))) / mib:.1f} MiB compressed vs upper dir "
          f"{upper / mib:.1f} MiB on disk")
    print(f"same digest on re-export: {first.get('digest') == again.get('digest')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
