"""The Kubernetes YAML validates against the OpenAPI schemas and keeps secrets in the Secret."""

from __future__ import annotations

import io

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from daemon.errors import InvalidArgument
from daemon.export.kubernetes import API_VERSIONS, render, render_yaml

IMAGE = "registry.example.com/team/exp@sha256:" + "a" * 64


def test_yaml_validates_for_every_claimed_version_and_holds_no_secret_value() -> None:
    text = render_yaml(render("exp", IMAGE, engine_url="ws://iii-engine.iii:49134",
                              memory_mib=512, cpus=1, secret_env={"API_TOKEN": "s3cret-value"},
                              namespace="workers", runtime_class="kata", replicas=10))
    docs = list(YAML(typ="safe").load_all(io.StringIO(text)))
    for version in API_VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)
    deployment, secret = docs
    assert "s3cret-value" not in str(deployment) and secret["stringData"] == {
        "API_TOKEN": "s3cret-value"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "kata" and pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["image"] == IMAGE


def test_a_schema_violation_is_caught() -> None:
    [deployment, _] = render("exp", IMAGE, engine_url="ws://engine:1", memory_mib=1, cpus=1,
                             secret_env={})
    deployment["spec"]["replicas"] = "ten"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, API_VERSIONS[0], strict=True)


@pytest.mark.parametrize("url", ["ws://127.0.0.1:49134", "ws://localhost:49134", "ws://[::1]:1"])
def test_a_loopback_engine_url_is_refused_with_the_reason(url: str) -> None:
    with pytest.raises(InvalidArgument, match="loopback address, which a pod cannot reach"):
        render("exp", IMAGE, engine_url=url, memory_mib=1, cpus=1, secret_env={})
