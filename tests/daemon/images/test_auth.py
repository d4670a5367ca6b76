from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from daemon.images.auth import Credentials, load_credentials, parse_challenge
from daemon.images.errors import RegistryError


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(("header", "scheme", "params"), [
    (('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
     'scope="repository:library/busybox:pull"'), "bearer",
     {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
      "scope": "repository:library/busybox:pull"}),
    ('Basic realm="iii-test"', "basic", {"realm": "iii-test"}),
    ('bearer realm=https://x/token,service=x', "bearer",
     {"realm": "https://x/token", "service": "x"}),
    ('Bearer realm="a\\"b"', "bearer", {"realm": 'a\\"b'}),
], ids=["docker-hub", "basic", "unquoted", "escaped-quote"])
def test_parse_challenge(header: str, scheme: str, params: dict[str, str]) -> None:
    challenge = parse_challenge(header)
    assert (challenge.scheme, challenge.params) == (scheme, params)


def write_config(tmp_path: Path, auths: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": auths}))
    return path


@pytest.mark.parametrize(("key", "registry"), [
    ("https://index.docker.io/v1/", "docker.io"),
    ("registry-1.docker.io", "docker.io"),
    ("http://127.0.0.1:5000", "127.0.0.1:5000"),
    ("127.0.0.1:5000", "127.0.0.1:5000"),
    ("https://GHCR.io/v2/", "ghcr.io"),
])
def test_credentials_are_found_by_host(tmp_path: Path, key: str, registry: str) -> None:
    path = write_config(tmp_path, {key: {"auth": b64("user:pa:ss")}})
    creds = load_credentials(path, registry)
    assert creds == Credentials(username="user", password="pa:ss")
    assert creds is not None and creds.basic_header() == "Basic " + b64("user:pa:ss")


def test_other_hosts_and_missing_files_give_none(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"ghcr.io": {"auth": b64("u:p")}})
    assert load_credentials(path, "quay.io") is None
    assert load_credentials(tmp_path / "absent.json", "ghcr.io") is None
    assert load_credentials(None, "ghcr.io") is None


def test_registry_token_and_identity_token(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"a.io": {"registrytoken": "tok"},
                                   "b.io": {"auth": b64("u:"), "identitytoken": "idt"}})
    assert load_credentials(path, "a.io") == Credentials(registry_token="tok")
    assert load_credentials(path, "b.io") == Credentials(username="u", password="idt")


@pytest.mark.parametrize("content", ["{not json", json.dumps({"auths": {"x.io": {"auth": "%%%"}}})],
                         ids=["bad-json", "bad-base64"])
def test_unreadable_config_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(RegistryError, match=str(path)):
        load_credentials(path, "x.io")
