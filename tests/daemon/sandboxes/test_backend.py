from __future__ import annotations

import pytest

from daemon.errors import InvalidArgument, Unavailable
from daemon.sandboxes.backend import choose_backend


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
