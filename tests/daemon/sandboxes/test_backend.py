from __future__ import annotations

from pathlib import Path

import pytest

from daemon.errors import InvalidArgument, Unavailable
from daemon.sandboxes.backend import NetworkChoice, choose_backend, choose_network
from vmm_ffi.network.bridge import bridge_problem
from vmm_ffi.network.helper import tun_problem


def test_namespace_setting_gives_namespace() -> None:
    got = choose_backend("namespace")
    assert got.backend == "namespace"


def test_auto_falls_back_to_namespace_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("III_LIBKRUN_PATH", "/nonexistent/libkrun.so.1")
    got = choose_backend("auto")
    assert got.backend == "namespace"
    assert got.reason is not None and "libkrun" in got.reason


def test_libkrun_setting_without_libkrun_is_unavailable_with_hint(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("III_LIBKRUN_PATH", "/nonexistent/libkrun.so.1")
    with pytest.raises(Unavailable) as err:
        choose_backend("libkrun")
    assert err.value.reason


def test_unknown_setting() -> None:
    with pytest.raises(InvalidArgument, match="isolation 'kvm' is invalid"):
        choose_backend("kvm")


@pytest.mark.skipif(tun_problem() is not None, reason="/dev/net/tun is not ours")
def test_network_prefers_pasta_then_slirp4netns(tmp_path: Path) -> None:
    pasta, slirp = tmp_path / "pasta", tmp_path / "slirp4netns"
    for tool in (pasta, slirp):
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)
    both = {"III_PASTA": str(pasta), "III_SLIRP4NETNS": str(slirp)}
    # network_backend: pasta (a non-root daemon's auto): pasta, else slirp4netns
    assert choose_network("auto", "namespace", both, connect="pasta") == NetworkChoice(
        mode="pasta", pasta=str(pasta))
    second = choose_network("auto", "namespace", {**both, "III_PASTA": str(tmp_path / "none")},
                            connect="pasta")
    assert second == NetworkChoice(mode="slirp4netns", slirp4netns=str(slirp))
    assert choose_network("egress", "namespace", both, connect="slirp4netns") == NetworkChoice(
        mode="slirp4netns", slirp4netns=str(slirp))
    with pytest.raises(Unavailable) as none:
        choose_network("auto", "namespace", {"III_PASTA": str(tmp_path / "none"),
                                             "III_SLIRP4NETNS": str(tmp_path / "none")},
                       connect="pasta")
    assert none.value.hint is not None
    assert "apt-get install passt" in none.value.hint and "network: host" in none.value.hint
    assert choose_network("host", "namespace", {}).mode == "host"  # the warned opt-out
    assert choose_network("auto", "libkrun", {}).mode == "host"  # libkrun brings TSI


def test_a_tun_device_we_may_not_open_gives_its_fix_once(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vmm_ffi.network.helper.TUN", str(tmp_path / "no-tun"))
    pasta = tmp_path / "pasta"
    pasta.write_text("#!/bin/sh\n")
    pasta.chmod(0o755)
    with pytest.raises(Unavailable) as err:
        choose_network("auto", "namespace", {"III_PASTA": str(pasta)}, connect="pasta")
    line = str(err.value)
    assert "may not open" in line and "\n" not in line
    assert line.count("chmod 0666") == 1 and line.count("network: host") == 1, line
    assert choose_network("none", "namespace", {}).mode == "none"  # no helper needed


def test_a_root_daemon_prefers_its_bridge() -> None:
    expected = "bridge" if bridge_problem() is None else None
    if expected is None:
        with pytest.raises(Unavailable, match="network_backend: bridge: "):
            choose_network("egress", "namespace", {}, connect="bridge")
    else:
        assert choose_network("egress", "namespace", {}).mode == "bridge"
        assert choose_network("egress", "namespace", {}, connect="bridge").mode == "bridge"
