"""Kubernetes YAML for an exported worker (SPEC §14): a Deployment and a Secret.

Pure: objects in, plain dicts out (``render_yaml`` dumps them). Secret values (env from
``config:`` entries or ``${VAR}`` expansion) only ever appear in the Secret; the Deployment
refers to them by key. ``iii worker export NAME --kubernetes`` (``worker.kubernetes``) uses it.
"""

from __future__ import annotations

import io
import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML

from daemon.errors import InvalidArgument

API_VERSIONS = ("1.30.0", "1.31.0", "1.32.0")  # what tests validate against (kubernetes-validate)


def check_engine_url(url: str) -> str:
    """A pod cannot reach the laptop's loopback engine: refuse it, saying what to pass."""
    host = urlsplit(url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        raise InvalidArgument(f"the engine URL {url} is a loopback address, which a pod cannot "
                              "reach; pass --engine-url with the engine's address in the cluster")
    return url


def render(name: str, image: str, *, engine_url: str, memory_mib: int, cpus: int,
           secret_env: Mapping[str, str], namespace: str = "default",
           runtime_class: str | None = None, replicas: int = 1) -> list[dict[str, Any]]:
    """[Deployment, Secret] for ``image`` (must be by digest)."""
    if "@sha256:" not in image:
        raise InvalidArgument(f"image {image!r} must be pinned by digest (REPO@sha256:…)")
    check_engine_url(engine_url)
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "iii"}
    secret_name = f"{name}-env"
    env: list[dict[str, Any]] = [
        {"name": "III_URL", "value": engine_url},
        {"name": "III_ENGINE_URL", "value": engine_url},
        {"name": "III_WORKER_NAME", "value": name},
    ] + [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}
         for key in sorted(secret_env)]
    amount = {"memory": f"{memory_mib}Mi", "cpu": str(cpus)}
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "worker", "image": image, "env": env,
            "resources": {"requests": dict(amount), "limits": dict(amount)},
            "securityContext": {"allowPrivilegeEscalation": False},
        }],
    }
    if runtime_class:
        pod["runtimeClassName"] = runtime_class
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                 "template": {"metadata": {"labels": labels}, "spec": pod}},
    }
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": secret_name, "namespace": namespace, "labels": labels},
              "stringData": dict(sorted(secret_env.items()))}
    return [deployment, secret]


def render_yaml(docs: list[dict[str, Any]]) -> str:
    yaml = YAML()
    out = io.StringIO()
    yaml.dump_all(docs, out)
    return out.getvalue()
