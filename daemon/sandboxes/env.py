"""The environment inside a sandbox, and the trust/DNS files placed in its root (SPEC §8).

The env is built from scratch: nothing of the daemon's environment leaks in except the proxy
settings. That is also why the host's pip configuration (``PIP_*``, ``PIP_CONFIG_FILE``) never
reaches a sandbox.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from daemon.errors import InvalidArgument
from daemon.sandboxes.beneath import read_file_beneath, write_file_beneath
from manifests.spec import RESERVED_ENV_KEYS

log = logging.getLogger(__name__)

PROXY_KEYS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
DEFAULTS = {
    "HOME": "/root",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
SANDBOX_CA_PATH = "/etc/ssl/certs/ca-certificates.crt"
SANDBOX_CA_COPY = "/etc/iii/ca.pem"
# Root-relative paths ``place_host_files`` writes: the host's, not the worker's (export skips them).
PLACED_FILES = ("etc/resolv.conf", SANDBOX_CA_PATH.lstrip("/"), SANDBOX_CA_COPY.lstrip("/"))
CA_ENV_KEYS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "NODE_EXTRA_CA_CERTS",
               "CARGO_HTTP_CAINFO")
SYSTEM_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, Alpine
)
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
_MAX_CA_BYTES = 16 << 20


def parse_env_list(items: Iterable[str]) -> dict[str, str]:
    """OCI image config ``Env`` (``["K=V", ...]``) → dict; entries without ``=`` are dropped."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if sep and key:
            out[key] = value
    return out


def build_sandbox_env(
    image_env: Iterable[str] | Mapping[str, str],
    manifest_env: Mapping[str, str],
    config_env: Mapping[str, str],
    engine_url: str,
    name: str,
    isolation: str,
    ca_bundle_present: bool,
    host_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The exact env of a sandbox process, lowest precedence first.

    host proxies → image ``Env`` → CA variables (when a bundle is placed) → manifest env →
    config-entry env → reserved ``III_*`` (always ours) → ``HOME``/``PATH``/``LANG`` when unset.
    ``host_env`` defaults to the daemon's ``os.environ``; only the proxy keys are read from it.
    """
    host = os.environ if host_env is None else host_env
    env: dict[str, str] = {k: host[k] for k in PROXY_KEYS if k in host}
    env.update(image_env if isinstance(image_env, Mapping) else parse_env_list(image_env))
    if ca_bundle_present:
        env.update({k: SANDBOX_CA_PATH for k in CA_ENV_KEYS})
    for layer in (manifest_env, config_env):
        env.update({k: v for k, v in layer.items() if k not in RESERVED_ENV_KEYS})
    env["III_URL"] = env["III_ENGINE_URL"] = engine_url
    env["III_WORKER_NAME"] = name
    env["III_ISOLATION"] = isolation
    for key, value in DEFAULTS.items():
        env.setdefault(key, value)
    return env


def resolve_ca_bundle(setting: str | None) -> Path | None:
    """The host CA bundle to place: ``None``/``""`` → the system bundle (if any), ``"none"`` →
    disabled, else that path, which must exist (``InvalidArgument`` otherwise)."""
    if setting is not None and setting.strip().lower() == "none":
        return None
    if setting:
        path = Path(setting).expanduser()
        if not path.is_file():
            raise InvalidArgument(
                f"ca_bundle {setting!r} is not a readable file: point ca_bundle in daemon.yaml "
                "at a PEM bundle, or set it to 'none'")
        return path
    for candidate in SYSTEM_CA_BUNDLES:
        if os.path.isfile(candidate):
            return Path(candidate)
    return None


def place_host_files(root: Path, ca_bundle: Path | None,
                     resolv_conf: Path = HOST_RESOLV_CONF) -> bool:
    """Copy the CA bundle and ``resolv.conf`` into the sandbox's writable root.

    ``root`` is the host path of the writable layer (``upper/`` or ``rootfs/``). Writes never
    follow a symlink the workload planted (see ``beneath``). Returns whether a CA bundle is placed
    (feed it to ``build_sandbox_env(ca_bundle_present=...)``).
    """
    placed = False
    if ca_bundle is not None:
        data = ca_bundle.read_bytes()[:_MAX_CA_BYTES]
        for target in (SANDBOX_CA_PATH, SANDBOX_CA_COPY):
            _place(root, target, data)
        placed = True
    try:
        resolv = resolv_conf.read_bytes()
    except OSError as exc:
        log.warning("cannot read %s (%s); the sandbox keeps its image's resolv.conf",
                    resolv_conf, exc.strerror)
    else:
        _place(root, "etc/resolv.conf", resolv)
    return placed


def _place(root: Path, relpath: str, data: bytes) -> None:
    """Write unless the file already holds ``data``: an unchanged sandbox root stays unchanged
    (same mtime and ctime), so exporting it again gives the same image digest and reuses the
    cached layer (daemon/export/service.py)."""
    if read_file_beneath(root, relpath, len(data) + 1) != data:
        write_file_beneath(root, relpath, data, 0o644)
