from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.errors import InvalidArgument
from daemon.sandboxes.env import (
    CA_ENV_KEYS,
    SANDBOX_CA_PATH,
    build_sandbox_env,
    place_host_files,
    resolve_ca_bundle,
)

HOST = {"HTTP_PROXY": "http://proxy:3128", "https_proxy": "http://proxy:3128",
        "NO_PROXY": "localhost", "PIP_INDEX_URL": "http://host-only/simple",
        "PIP_CONFIG_FILE": "/root/.pip/pip.conf", "PIP_FIND_LINKS": "/wheels",
        "SECRET_TOKEN": "s3cr3t", "HOME": "/home/daemon", "PATH": "/opt/host/bin",
        "VIRTUAL_ENV": "/work/.venv"}


def env(**kw: object) -> dict[str, str]:
    args: dict[str, object] = {"image_env": [], "manifest_env": {}, "config_env": {},
                                   "engine_url": "ws://127.0.0.1:49134", "name": "calc",
                                   "isolation": "namespace", "ca_bundle_present": False, "host_env": HOST}
    args.update(kw)
    return build_sandbox_env(**args)  # type: ignore[arg-type]


def test_exact_env_only_proxies_leak() -> None:
    assert env() == {
        "HTTP_PROXY": "http://proxy:3128", "https_proxy": "http://proxy:3128",
        "NO_PROXY": "localhost",
        "III_URL": "ws://127.0.0.1:49134", "III_ENGINE_URL": "ws://127.0.0.1:49134",
        "III_WORKER_NAME": "calc", "III_ISOLATION": "namespace",
        "HOME": "/root", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8"}


def test_host_pip_config_does_not_leak() -> None:
    assert not any(k.startswith("PIP_") or k == "VIRTUAL_ENV" for k in env())


def test_default_host_env_is_the_daemon_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://leak")
    monkeypatch.setenv("HTTPS_PROXY", "http://p:1")
    got = build_sandbox_env([], {}, {}, "ws://e", "w", "namespace", False)
    assert "PIP_INDEX_URL" not in got and got["HTTPS_PROXY"] == "http://p:1"


def test_precedence_image_manifest_config() -> None:
    got = env(image_env=["A=image", "B=image", "PATH=/image/bin", "LANG=de_DE.UTF-8", "junk"],
              manifest_env={"B": "manifest", "C": "manifest"},
              config_env={"C": "config", "HTTP_PROXY": "http://mine"})
    assert (got["A"], got["B"], got["C"]) == ("image", "manifest", "config")
    assert got["PATH"] == "/image/bin" and got["LANG"] == "de_DE.UTF-8"
    assert got["HTTP_PROXY"] == "http://mine"
    assert "junk" not in got


@pytest.mark.parametrize("key", ["III_URL", "III_ENGINE_URL", "III_WORKER_NAME", "III_ISOLATION"])
def test_reserved_keys_cannot_be_overridden(key: str) -> None:
    got = env(image_env=[f"{key}=img"], manifest_env={key: "m"}, config_env={key: "c"},
              isolation="libkrun")
    assert got[key] in ("ws://127.0.0.1:49134", "calc", "libkrun")


def test_ca_vars_only_when_bundle_placed() -> None:
    assert not set(CA_ENV_KEYS) & set(env())
    got = env(ca_bundle_present=True)
    assert {k: got[k] for k in CA_ENV_KEYS} == {k: SANDBOX_CA_PATH for k in CA_ENV_KEYS}


def test_resolve_ca_bundle(tmp_path: Path) -> None:
    assert resolve_ca_bundle("none") is None and resolve_ca_bundle("NONE") is None
    pem = tmp_path / "ca.pem"
    pem.write_text("PEM")
    assert resolve_ca_bundle(str(pem)) == pem
    with pytest.raises(InvalidArgument, match="ca_bundle"):
        resolve_ca_bundle(str(tmp_path / "missing.pem"))
    if os.path.isfile("/etc/ssl/certs/ca-certificates.crt"):
        assert resolve_ca_bundle(None) == Path("/etc/ssl/certs/ca-certificates.crt")


def test_place_host_files_writes_bundle_and_resolv(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("BUNDLE")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.53\n")
    root = tmp_path / "upper"
    assert place_host_files(root, pem, resolv) is True
    assert (root / "etc/ssl/certs/ca-certificates.crt").read_text() == "BUNDLE"
    assert (root / "etc/iii/ca.pem").read_text() == "BUNDLE"
    assert (root / "etc/resolv.conf").read_text() == "nameserver 10.0.0.53\n"
    assert place_host_files(tmp_path / "other", None, resolv) is False
    assert not (tmp_path / "other/etc/iii").exists()


def test_place_host_files_never_writes_through_planted_links(tmp_path: Path) -> None:
    victim = tmp_path / "host-etc"
    (victim / "ssl/certs").mkdir(parents=True)
    (victim / "resolv.conf").write_text("host")
    root = tmp_path / "upper"
    root.mkdir()
    (root / "etc").symlink_to(victim)  # the workload made /etc a link to "the host's /etc"
    pem = tmp_path / "ca.pem"
    pem.write_text("BUNDLE")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("sandbox")
    place_host_files(root, pem, resolv)
    assert (victim / "resolv.conf").read_text() == "host"
    assert list((victim / "ssl/certs").iterdir()) == []
    assert not (root / "etc").is_symlink()
    assert (root / "etc/resolv.conf").read_text() == "sandbox"
