"""DaemonSettings: daemon.yaml keys, env overrides, one-line errors naming file/key/variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config.settings import DEFAULT_ENGINE_URL, load_settings
from daemon.errors import SettingsError


def env_for(home: Path, **extra: str) -> dict[str, str]:
    return {"III_HOME": str(home), **extra}


def test_defaults_without_daemon_yaml(tmp_path: Path) -> None:
    s = load_settings(env_for(tmp_path))
    assert s.home == tmp_path and s.socket_path == tmp_path / "iii.sock"
    assert s.config_path == tmp_path / "config.yaml"
    assert (s.engine_url, s.isolation, s.engine_down_grace_s, s.stop_timeout_s) == (
        DEFAULT_ENGINE_URL, "auto", 30.0, 10.0)
    assert (s.log_max_bytes, s.log_keep) == (10 * 1024 * 1024, 3)


def test_daemon_yaml_keys_are_read(tmp_path: Path) -> None:
    (tmp_path / "daemon.yaml").write_text(
        "# comment\nisolation: namespace\nengine_url: ws://10.0.0.1:1\nengine_down_grace_s: 0\n"
        "stop_timeout_s: 3\nlog_max_bytes: 65536\nlog_keep: 1\n"
        "restart_backoff_s: 0.1\nrestart_backoff_max_s: 2\n"
        "insecure_registries: [reg.local:5000]\nregistry_mirror: mirror:5000\nca_bundle: none\n")
    s = load_settings(env_for(tmp_path))
    assert (s.isolation, s.engine_url, s.engine_down_grace_s, s.stop_timeout_s) == (
        "namespace", "ws://10.0.0.1:1", 0.0, 3.0)
    assert (s.log_max_bytes, s.log_keep) == (65536, 1)
    assert (s.restart_backoff_s, s.restart_backoff_max_s) == (0.1, 2.0)
    assert s.insecure_registries == ("reg.local:5000",) and s.registry_mirror == "mirror:5000"
    assert s.ca_bundle is None


@pytest.mark.parametrize("text, expected", [("", False), ("engine_control: true\n", True),
                                            ("engine_control: false\n", False)],
                         ids=["default", "on", "off"])
def test_engine_control_is_off_unless_asked_for(tmp_path: Path, text: str,
                                                expected: bool) -> None:
    (tmp_path / "daemon.yaml").write_text(text)
    assert load_settings(env_for(tmp_path)).engine_control is expected


def test_engine_control_must_be_a_boolean(tmp_path: Path) -> None:
    (tmp_path / "daemon.yaml").write_text("engine_control: sure\n")
    with pytest.raises(SettingsError, match="engine_control: Expected `bool"):
        load_settings(env_for(tmp_path))


def test_environment_wins_over_daemon_yaml(tmp_path: Path) -> None:
    (tmp_path / "daemon.yaml").write_text(
        "isolation: libkrun\nengine_url: ws://a:1\ninsecure_registries: [a]\n"
        "registry_mirror: m1\n")
    s = load_settings(env_for(
        tmp_path, III_ISOLATION_BACKEND="namespace", III_URL="ws://b:2",
        III_INSECURE_REGISTRIES="x:1, y:2", III_REGISTRY_MIRROR="m2",
        III_SOCKET="/tmp/s.sock", III_CONFIG_PATH=str(tmp_path / "c.yaml")))
    assert (s.isolation, s.engine_url, s.registry_mirror) == ("namespace", "ws://b:2", "m2")
    assert s.insecure_registries == ("x:1", "y:2")
    assert s.socket_path == Path("/tmp/s.sock") and s.config_path == tmp_path / "c.yaml"


def test_config_flag_wins_over_env(tmp_path: Path) -> None:
    s = load_settings(env_for(tmp_path, III_CONFIG_PATH="/a.yaml"),
                      config_path=tmp_path / "flag.yaml")
    assert s.config_path == tmp_path / "flag.yaml"


@pytest.mark.parametrize("text, expected", [
    ("isolation: [\n", "daemon.yaml:2:1: invalid YAML"),
    ("- a\n- b\n", "daemon.yaml:1:1: must be a mapping"),
    ("log_keep: 1\nisolation: docker\n", "daemon.yaml:2:12: isolation: Invalid enum value 'docker'"),
    ("stop_timeout_s: -1\n", "daemon.yaml:1:17: stop_timeout_s: Expected `float` >= 0"),
    ("engine_url: ws://x\nenigne_url: ws://y\n", "daemon.yaml:2:1: enigne_url: unknown setting"),
    ("log_keep: 1\nlog_keep: 2\n", "daemon.yaml:2:1: invalid YAML"),
    ("ca_bundle: /nonexistent/ca.pem\n", "ca_bundle: /nonexistent/ca.pem is not a file"),
], ids=["not-yaml", "not-mapping", "bad-enum", "negative", "unknown-key", "duplicate",
        "missing-ca"])
def test_invalid_daemon_yaml_is_one_line_naming_file_and_key(tmp_path: Path, text: str,
                                                             expected: str) -> None:
    (tmp_path / "daemon.yaml").write_text(text)
    with pytest.raises(SettingsError) as info:
        load_settings(env_for(tmp_path))
    message = str(info.value)
    assert "\n" not in message and expected in message, message
    assert str(tmp_path / "daemon.yaml") in message


def test_invalid_isolation_env_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="III_ISOLATION_BACKEND='kvm' is invalid"):
        load_settings(env_for(tmp_path, III_ISOLATION_BACKEND="kvm"))


def test_engine_url_must_be_a_websocket_url(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="III_URL: 'localhost:49134' is not a ws://"):
        load_settings(env_for(tmp_path, III_URL="localhost:49134"))


def test_network_setting_from_daemon_yaml_and_env(tmp_path: Path) -> None:
    assert load_settings(env_for(tmp_path)).network == "auto"
    (tmp_path / "daemon.yaml").write_text("network: host\n")
    assert load_settings(env_for(tmp_path)).network == "host"
    assert load_settings(env_for(tmp_path, III_NETWORK="auto")).network == "auto"
    assert load_settings(env_for(tmp_path, III_NETWORK="none")).network == "none"
    with pytest.raises(SettingsError, match="III_NETWORK='open' is invalid; use one of auto, "
                                            "none, engine, egress, host"):
        load_settings(env_for(tmp_path, III_NETWORK="open"))
    (tmp_path / "daemon.yaml").write_text("network: slirp\n")
    with pytest.raises(SettingsError, match="network"):
        load_settings(env_for(tmp_path))


def test_network_policy_default_from_daemon_yaml(tmp_path: Path) -> None:
    assert load_settings(env_for(tmp_path)).network_default.policy == "egress"
    (tmp_path / "daemon.yaml").write_text(
        "network:\n  policy: engine\n  allow: [127.0.0.1:5432, 10.1.0.0/16:8000-8100]\n"
        "  deny: [203.0.113.0/24]\n")
    settings = load_settings(env_for(tmp_path))
    assert settings.network_default.policy == "engine"
    assert settings.network_allow == ("127.0.0.1:5432", "10.1.0.0/16:8000-8100")
    assert settings.network_deny == ("203.0.113.0/24",)


@pytest.mark.parametrize(("yaml", "message"), [
    ("network: open\n", (":1:10: network: 'open' is not a network policy; use one of none, "
                         "engine, egress, host")),
    ("network:\n  allow: [10.0.0.300/8]\n", (":2:3: network.allow[0]: '10.0.0.300/8' is "
                                            "not an IP address or CIDR")),
    ("network:\n  policy: host\n  allow: [10.0.0.0/8]\n",
     ":2:3: network: allow/deny need a network namespace of the sandbox's own"),
    ("network:\n  deny: [127.0.0.1:5432]\n",
     "network.deny: '127.0.0.1:5432': host loopback ports are closed unless allowed"),
    ("network:\n  allow: [a.example:80]\n", ("network.allow[0]: 'a.example:80' is not an IP "
                                             "address or CIDR")),
    ("network:\n  subnet: 10.0.0.0/24\n", "network.subnet: unknown key"),
], ids=["policy", "cidr", "host-with-lists", "loopback-deny", "hostname", "unknown-key"])
def test_a_bad_network_setting_is_one_line_naming_the_field(tmp_path: Path, yaml: str,
                                                             message: str) -> None:
    (tmp_path / "daemon.yaml").write_text(yaml)
    with pytest.raises(SettingsError) as failed:
        load_settings(env_for(tmp_path))
    assert message in str(failed.value)
    assert str(failed.value).startswith(str(tmp_path / "daemon.yaml"))
    assert "\n" not in str(failed.value)
