"""Daemon settings: ``$III_HOME/daemon.yaml`` (optional) overlaid by environment variables (SPEC §2).

    settings = load_settings(os.environ, config_path=None)   # raises SettingsError
    settings.socket_path, settings.engine_url, settings.isolation, ...

Precedence, lowest first: built-in defaults, ``daemon.yaml``, environment (``III_URL``,
``III_ISOLATION_BACKEND``, ``III_INSECURE_REGISTRIES``, ``III_REGISTRY_MIRROR``), then the
``--config`` flag for the worker registry path. ``III_HOME``, ``III_CONFIG_PATH`` and
``III_SOCKET`` only come from the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from daemon.config.network import ALIASES, POLICIES, NetworkSetting, parse_network
from daemon.config.sandbox_policy import SandboxPolicy, load_policy
from daemon.errors import ConfigError, SettingsError
from daemon.images.settings import registry_overrides

__all__ = ["DEFAULT_ENGINE_URL", "DaemonSettings", "SettingsError", "load_settings"]

DEFAULT_ENGINE_URL = "ws://127.0.0.1:49134"
ISOLATION_CHOICES = ("auto", "libkrun", "namespace")
SYSTEM_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, BSDs
)
MAX_DAEMON_YAML_BYTES = 64 * 1024


class _DaemonYaml(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The keys ``daemon.yaml`` may hold (all optional)."""

    isolation: Literal["auto", "libkrun", "namespace"] | None = None
    network: str | dict[str, Any] | None = None  # checked by daemon.config.network
    network_backend: Literal["auto", "bridge", "pasta", "slirp4netns"] | None = None
    network_subnet: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    engine_url: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    engine_down_grace_s: Annotated[float, msgspec.Meta(ge=0)] | None = None
    stop_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] | None = None
    restart_backoff_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] | None = None
    restart_backoff_max_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] | None = None
    log_max_bytes: Annotated[int, msgspec.Meta(ge=4096)] | None = None
    log_keep: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    insecure_registries: list[str] | None = None
    registry_mirror: str | None = None
    ca_bundle: str | None = None
    engine_control: bool | None = None
    sandboxes: SandboxPolicy | None = None  # the ephemeral sandbox service


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """Everything the daemon's components are configured with, fully resolved."""

    home: Path
    config_path: Path  # the worker registry, config.yaml
    socket_path: Path
    settings_path: Path  # daemon.yaml (may not exist)
    engine_url: str = DEFAULT_ENGINE_URL
    isolation: str = "auto"
    # the default network policy (daemon.config.network): auto (= egress), none, engine,
    # egress, host (shares the host's network), and allow/deny lists added to every worker's
    network: str = "auto"
    network_allow: tuple[str, ...] = ()
    network_deny: tuple[str, ...] = ()
    # how an own network namespace is connected: auto (root: the bridge when nft and ip are
    # installed; else pasta, else slirp4netns), bridge, pasta (slirp4netns second), slirp4netns
    network_backend: str = "auto"
    network_subnet: str | None = None  # the bridge's IPv4 subnet; None: a free /24 is chosen
    engine_down_grace_s: float = 30.0
    stop_timeout_s: float = 10.0
    restart_backoff_s: float = 1.0  # a crashed worker's first restart delay, doubling ...
    restart_backoff_max_s: float = 60.0  # ... to this; a worker that ran this long starts over
    log_max_bytes: int = 10 * 1024 * 1024
    log_keep: int = 3
    insecure_registries: tuple[str, ...] = ()
    registry_mirror: str | None = None
    ca_bundle: Path | None = None  # None: do not give sandboxes a CA bundle
    engine_control: bool = False  # serve worker::start/stop/... on the engine bus (SPEC §10)
    sandboxes: SandboxPolicy = field(default_factory=SandboxPolicy)  # sandbox::* catalog and limits

    @property
    def network_default(self) -> NetworkSetting:
        """The daemon's network policy, the default of every worker."""
        return NetworkSetting(policy=ALIASES.get(self.network, self.network),
                              allow=self.network_allow, deny=self.network_deny)

    @property
    def log_path(self) -> Path:
        """Where an auto-started daemon writes its log."""
        return self.home / "daemon.log"


def default_ca_bundle() -> Path | None:
    for candidate in SYSTEM_CA_BUNDLES:
        if os.path.isfile(candidate):
            return Path(candidate)
    return None


def _read_daemon_yaml(path: Path) -> dict[str, Any]:
    """Parse daemon.yaml; errors name the file and, where known, line:column and key."""
    from daemon.config.entries import load_yaml, plain

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return {}
    except OSError as exc:  # III_HOME under a file, or not searchable: one line, no traceback
        raise SettingsError(f"{path}: cannot read: {exc.strerror}; set III_HOME to a "
                            "directory you can write") from exc
    if size > MAX_DAEMON_YAML_BYTES:
        raise SettingsError(f"{path}: file is larger than {MAX_DAEMON_YAML_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read: {exc}") from exc
    try:
        data = load_yaml(text, str(path))
    except ConfigError as exc:
        raise SettingsError(exc.message) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}:1:1: must be a mapping of settings, got {type(data).__name__}")
    try:
        msgspec.convert(plain(data), _DaemonYaml)  # ruamel's ScalarFloat is no float to msgspec
    except msgspec.ValidationError as exc:
        raise SettingsError(_locate(path, data, str(exc))) from exc
    out = dict(data)
    if out.get("network") is not None:
        from daemon.config.entries import plain

        try:
            out["network"] = parse_network(plain(out["network"]))
        except ValueError as exc:
            where = data.lc.data.get("network") if hasattr(data, "lc") else None
            pos = f":{where[2] + 1}:{where[3] + 1}" if where else ""
            raise SettingsError(f"{path}{pos}: {exc}") from exc
    return out


def _locate(path: Path, data: Any, message: str) -> str:
    """Turn msgspec's ``... - at `$.key`` into ``file:line:col: key: ...``."""
    key, use_value_pos, label_path = None, True, None
    if " - at `$." in message:
        message, _, where = message.partition(" - at `$.")
        label_path = where.rstrip("`")  # nested keys (sandboxes.max_...) are named in full
        key = label_path.split(".")[0].split("[")[0]
    elif message.startswith("Object contains unknown field `"):
        key = message.split("`")[1]
        known = ", ".join(f for f in _DaemonYaml.__struct_fields__)
        message = f"unknown setting (known: {known})"
        use_value_pos = False
    pos = ""
    lc = getattr(data, "lc", None)
    if key is not None and lc is not None:
        where = lc.data.get(key)  # [key line, key col, value line, value col]
        if where:
            line, col = (where[2], where[3]) if use_value_pos else (where[0], where[1])
            pos = f":{line + 1}:{col + 1}"
    label = f" {label_path or key}:" if key else ""
    return f"{path}{pos}:{label} {message}"


def _env_network(env: Mapping[str, str]) -> str | None:
    value = env.get("III_NETWORK")
    if value is None:
        return None
    if value not in ("auto", *POLICIES):
        raise SettingsError(f"III_NETWORK={value!r} is invalid; use one of auto, "
                            + ", ".join(POLICIES))
    return value


NETWORK_BACKENDS = ("auto", "bridge", "pasta", "slirp4netns")


def _env_network_backend(env: Mapping[str, str]) -> str | None:
    value = env.get("III_NETWORK_BACKEND")
    if not value:
        return None
    if value not in NETWORK_BACKENDS:
        raise SettingsError(f"III_NETWORK_BACKEND={value!r} is invalid; use one of "
                            + ", ".join(NETWORK_BACKENDS))
    return value


def _subnet(value: str | None, settings_path: Path) -> str | None:
    if value is None:
        return None
    import ipaddress

    try:
        return str(ipaddress.IPv4Network(value))
    except ValueError as exc:
        raise SettingsError(f"{settings_path}: network_subnet: {value!r} is not an IPv4 "
                            f"subnet like 10.89.7.0/24 ({exc})") from None


def _env_isolation(env: Mapping[str, str]) -> str | None:
    value = env.get("III_ISOLATION_BACKEND")
    if value is None or value == "":
        return None
    if value not in ISOLATION_CHOICES:
        raise SettingsError(f"III_ISOLATION_BACKEND={value!r} is invalid; use one of "
                            + ", ".join(ISOLATION_CHOICES))
    return value


def _pick(raw: dict[str, Any], key: str, defaults: DaemonSettings) -> Any:
    value = raw.get(key)
    return getattr(defaults, key) if value is None else value


def load_settings(env: Mapping[str, str] | None = None, *,
                  config_path: Path | None = None) -> DaemonSettings:
    """Resolve the daemon's settings from ``env`` (default ``os.environ``) and daemon.yaml.

    Raises :class:`SettingsError` with one line naming the file/key or variable at fault.
    """
    env = os.environ if env is None else env
    home = Path(env.get("III_HOME") or Path.home() / ".iii").expanduser().absolute()
    settings_path = home / "daemon.yaml"
    raw = _read_daemon_yaml(settings_path)
    config_path, socket_path = _config_and_socket_paths(env, home, config_path)
    env_insecure, env_mirror = registry_overrides(env)
    insecure = env_insecure if env_insecure is not None else \
        list(raw.get("insecure_registries") or [])
    ca_bundle = _ca_bundle(raw.get("ca_bundle"), settings_path)
    engine_url = _engine_url(env, raw, settings_path)
    defaults = DaemonSettings(home=home, config_path=config_path, socket_path=socket_path,
                              settings_path=settings_path)
    network: NetworkSetting = raw.get("network") or NetworkSetting()
    env_policy = _env_network_policy(env, network, settings_path)
    return DaemonSettings(
        home=home,
        config_path=config_path,
        socket_path=socket_path,
        settings_path=settings_path,
        engine_url=engine_url,
        isolation=_env_isolation(env) or raw.get("isolation") or "auto",
        network=env_policy or network.policy or "auto",
        network_allow=network.allow,
        network_deny=network.deny,
        network_backend=_env_network_backend(env) or raw.get("network_backend") or "auto",
        network_subnet=_subnet(raw.get("network_subnet"), settings_path),
        engine_down_grace_s=float(_pick(raw, "engine_down_grace_s", defaults)),
        stop_timeout_s=float(_pick(raw, "stop_timeout_s", defaults)),
        restart_backoff_s=float(_pick(raw, "restart_backoff_s", defaults)),
        restart_backoff_max_s=float(_pick(raw, "restart_backoff_max_s", defaults)),
        log_max_bytes=int(_pick(raw, "log_max_bytes", defaults)),
        log_keep=int(_pick(raw, "log_keep", defaults)),
        insecure_registries=tuple(insecure),
        registry_mirror=env_mirror or raw.get("registry_mirror") or None,
        ca_bundle=ca_bundle,
        engine_control=bool(_pick(raw, "engine_control", defaults)),
        sandboxes=load_policy(raw.get("sandboxes")),
    )


def _config_and_socket_paths(env: Mapping[str, str], home: Path,
                             config_path: Path | None) -> tuple[Path, Path]:
    """The worker registry (``--config``, else III_CONFIG_PATH) and the socket, absolute."""
    if config_path is None and env.get("III_CONFIG_PATH"):
        config_path = Path(env["III_CONFIG_PATH"])
    config_path = (config_path or home / "config.yaml").expanduser().absolute()
    socket_path = Path(env.get("III_SOCKET") or home / "iii.sock").expanduser().absolute()
    return config_path, socket_path


def _ca_bundle(ca_setting: Any, settings_path: Path) -> Path | None:
    """daemon.yaml's ca_bundle: unset = the system's bundle, ``none`` = no bundle, else a file."""
    if ca_setting is None:
        return default_ca_bundle()
    if str(ca_setting).lower() == "none":
        return None
    ca_bundle = Path(str(ca_setting)).expanduser()
    if not ca_bundle.is_file():
        raise SettingsError(f"{settings_path}: ca_bundle: {ca_bundle} is not a file "
                            "(use 'none' to give sandboxes no CA bundle)")
    return ca_bundle


def _engine_url(env: Mapping[str, str], raw: dict[str, Any], settings_path: Path) -> str:
    engine_url: str = env.get("III_URL") or raw.get("engine_url") or DEFAULT_ENGINE_URL
    if not engine_url.startswith(("ws://", "wss://", "http://", "https://")):
        source = "III_URL" if env.get("III_URL") else f"{settings_path}: engine_url"
        raise SettingsError(f"{source}: {engine_url!r} is not a ws:// or wss:// URL "
                            f"(default {DEFAULT_ENGINE_URL})")
    return engine_url


def _env_network_policy(env: Mapping[str, str], network: NetworkSetting,
                        settings_path: Path) -> str | None:
    """III_NETWORK, refused as ``host`` when daemon.yaml has allow/deny lists."""
    env_policy = _env_network(env)
    if env_policy == "host" and (network.allow or network.deny):
        raise SettingsError(f"III_NETWORK=host: {settings_path} has network allow/deny lists, "
                            "which need a network namespace of the sandbox's own; remove them "
                            "or unset III_NETWORK")
    return env_policy
