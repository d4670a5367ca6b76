from __future__ import annotations

from pathlib import Path

import pytest

from daemon.images.settings import DEFAULT_CONCURRENCY, RegistrySettings


def test_from_env_reads_the_documented_variables(tmp_path: Path) -> None:
    settings = RegistrySettings.from_env({
        "III_INSECURE_REGISTRIES": "reg.lan:5000, other.lan ,",
        "III_REGISTRY_MIRROR": "mirror.lan:5000",
        "DOCKER_CONFIG": str(tmp_path),
        "HOME": "/nonexistent",
    })
    assert settings.insecure_registries == frozenset({"reg.lan:5000", "other.lan"})
    assert settings.mirror == "mirror.lan:5000"
    assert settings.docker_config == tmp_path / "config.json"
    assert settings.concurrency == DEFAULT_CONCURRENCY


def test_env_wins_over_daemon_yaml_defaults() -> None:
    settings = RegistrySettings.from_env({"HOME": "/home/u", "III_REGISTRY_MIRROR": "env:1"},
                                         insecure_registries=["yaml.lan"],
                                         registry_mirror="yaml:1")
    assert settings.mirror == "env:1"
    assert settings.insecure_registries == frozenset({"yaml.lan"})
    assert settings.docker_config == Path("/home/u/.docker/config.json")
    assert RegistrySettings.from_env({}, registry_mirror="yaml:1").mirror == "yaml:1"
    assert RegistrySettings.from_env({}).docker_config is None


@pytest.mark.parametrize(("host", "plain"), [
    ("localhost", True), ("localhost:5000", True), ("127.0.0.1:5000", True),
    ("127.1.2.3", True), ("[::1]:5000", True), ("::1", True),
    ("reg.lan:5000", True), ("other.lan", True), ("other.lan:8080", True),
    ("reg.lan:6000", False), ("ghcr.io", False), ("10.0.0.1:5000", False),
    ("localhost.evil.com", False),
])
def test_plain_http_only_for_loopback_and_the_insecure_list(host: str, plain: bool) -> None:
    settings = RegistrySettings(insecure_registries=frozenset({"reg.lan:5000", "other.lan"}))
    assert settings.is_plain_http(host) is plain
