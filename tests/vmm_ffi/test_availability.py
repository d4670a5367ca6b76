"""Backend availability: real probes, actionable messages, the auto/libkrun/namespace choice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmm_ffi import availability
from vmm_ffi.availability import check_libkrun, check_namespace, select_backend
from vmm_ffi.errors import BackendUnavailable


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(availability, "_cache", {})


def test_namespace_probe_really_works_here() -> None:
    status = check_namespace()
    assert status.available, status.reason


def test_missing_library_says_how_to_install(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("III_LIBKRUN_PATH", str(tmp_path / "libkrun.so.1"))
    status = check_libkrun()
    assert not status.available
    assert status.reason is not None and "could not be loaded from III_LIBKRUN_PATH" in \
        status.reason
    assert status.hint is not None and "install libkrun" in status.hint


def test_library_not_on_the_system(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("III_LIBKRUN_PATH", raising=False)
    status = check_libkrun()
    if status.available:
        pytest.skip("a real libkrun is installed here")
    assert status.reason == "libkrun not found (tried libkrun.so.1, libkrun.so)"


def test_missing_kvm_says_modprobe(monkeypatch: pytest.MonkeyPatch, libkrun_double: Path,
                                   tmp_path: Path) -> None:
    monkeypatch.setenv("III_LIBKRUN_PATH", str(libkrun_double))
    status = check_libkrun(kvm_device=str(tmp_path / "kvm"))
    assert not status.available and status.reason == f"{tmp_path / 'kvm'} does not exist"
    assert "modprobe kvm_intel" in (status.hint or "") and "kvm_amd" in (status.hint or "")


def test_kvm_not_read_write_says_kvm_group(monkeypatch: pytest.MonkeyPatch,
                                           libkrun_double: Path, tmp_path: Path) -> None:
    monkeypatch.setenv("III_LIBKRUN_PATH", str(libkrun_double))
    not_a_device = tmp_path / "kvm-dir"
    not_a_device.mkdir()  # opening a directory read-write fails even for root
    status = check_libkrun(kvm_device=str(not_a_device))
    assert not status.available and "cannot be opened read-write" in (status.reason or "")
    assert "usermod -aG kvm" in (status.hint or "")


def test_intel_mac_is_refused() -> None:
    status = check_libkrun(system="darwin", machine="x86_64")
    assert (status.available, status.reason) == (False, "Intel Macs are not supported")


def test_apple_silicon_with_library_is_available(monkeypatch: pytest.MonkeyPatch,
                                                 libkrun_double: Path) -> None:
    monkeypatch.setenv("III_LIBKRUN_PATH", str(libkrun_double))
    assert check_libkrun(system="darwin", machine="arm64").available


def test_auto_prefers_libkrun_when_available(monkeypatch: pytest.MonkeyPatch,
                                             libkrun_double: Path) -> None:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("no read-write /dev/kvm on this host")
    monkeypatch.setenv("III_LIBKRUN_PATH", str(libkrun_double))
    assert select_backend("auto") == ("libkrun", None)


def test_auto_falls_back_to_namespace_with_the_reason(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("III_LIBKRUN_PATH", str(tmp_path / "missing.so"))
    backend, reason = select_backend("auto")
    assert backend == "namespace"
    assert reason is not None and reason.startswith("libkrun unavailable: libkrun could not be")
    assert "namespace backend (no hardware isolation)" in reason


def test_explicit_libkrun_that_cannot_work_is_an_error(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setenv("III_LIBKRUN_PATH", str(tmp_path / "missing.so"))
    with pytest.raises(BackendUnavailable) as info:
        select_backend("libkrun")
    assert info.value.hint is not None and "install libkrun" in info.value.hint


def test_explicit_namespace() -> None:
    assert select_backend("namespace") == ("namespace", "isolation set to namespace")


def test_probe_is_cached_per_process() -> None:
    first = check_namespace()
    assert check_namespace() is first
