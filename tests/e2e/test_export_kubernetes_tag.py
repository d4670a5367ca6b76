"""``iii worker export NAME --kubernetes --image REPO:TAG`` as a user runs it: the YAML names the
image by the digest the real test registry gives for the tag, the CLI says which digest it used,
and a registry that cannot be asked is one line on stderr."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from daemon.export.kubernetes import API_VERSIONS
from tests.support.images import TarEntry, layer_blob, push_image
from tests.support.projects import make_shell_project
from tests.support.registry import RegistryServer, free_port

pytestmark = pytest.mark.slow

ENGINE = "ws://iii-engine.iii:49134"


def image_of(yaml_text: str) -> str:
    deployment = next(YAML(typ="safe").load_all(yaml_text))
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def test_a_tag_is_written_as_the_digest_the_registry_gives_and_named(
        daemon_factory, busybox_image: str, registry: RegistryServer, tmp_path: Path) -> None:
    project = make_shell_project(tmp_path, busybox_image, "tagged", start="exec sleep 600")
    daemon = daemon_factory()
    added = daemon.iii("worker", "add", str(project))
    assert added.returncode == 0, added.stderr
    digest = push_image(registry.access, "team/tagged", "v1",
                        [layer_blob([TarEntry("etc/which", data=b"tagged")])])
    tag, pinned = f"{registry.host}/team/tagged:v1", f"{registry.host}/team/tagged@{digest}"

    res = daemon.iii("worker", "export", "tagged", "--kubernetes", "--image", tag,
                     "--engine-url", ENGINE)
    assert res.returncode == 0, res.stderr
    assert res.stderr == f"using {pinned} (the digest {tag} names at its registry now)\n"
    docs = list(YAML(typ="safe").load_all(res.stdout))  # stdout is the YAML only
    for version in API_VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)
    assert image_of(res.stdout) == pinned

    out = tmp_path / "tagged.yaml"
    wrote = daemon.iii("worker", "export", "tagged", "--kubernetes", "--image", tag,
                       "--engine-url", ENGINE, "-o", str(out))
    assert wrote.returncode == 0, wrote.stderr
    assert wrote.stdout == f"wrote {out} (image {pinned})\n" and pinned in out.read_text()
    assert daemon.json("worker", "export", "tagged", "--kubernetes", "--image", tag,
                       "--engine-url", ENGINE)["image"] == pinned
    # given by digest: used as it is, nothing said
    given = daemon.iii("worker", "export", "tagged", "--kubernetes", "--image", pinned,
                       "--engine-url", ENGINE)
    assert given.returncode == 0 and given.stderr == "", given.stderr
    assert image_of(given.stdout) == pinned

    # a registry nobody answers on: one line naming it and what to pass instead
    gone = f"127.0.0.1:{free_port()}/team/tagged:v1"
    res = daemon.iii("worker", "export", "tagged", "--kubernetes", "--image", gone,
                     "--engine-url", ENGINE)
    assert res.returncode == 1 and res.stdout == ""
    [line] = res.stderr.strip().splitlines()
    assert line.startswith(f"error: image {gone}: resolving tag v1: ") and "Cannot connect" in line
    assert line.endswith("pass --image REPO@sha256:... to name the digest yourself")
