"""macOS interpreter signing, exercised on Linux with a fake ``codesign`` that records its args."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from vmm_ffi.libkrun.codesign import (
    SIGNED_NAME,
    CodesignFailed,
    ensure_signed_interpreter,
    interpreter_env,
)

FAKE_CODESIGN = """#!/bin/sh
printf '%s\\n' "$*" >> "{record}"
exit {code}
"""


@pytest.fixture
def fake_codesign(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    def install(code: int = 0) -> Path:
        bindir = tmp_path / "fakebin"
        bindir.mkdir(exist_ok=True)
        record = tmp_path / "codesign-calls"
        script = bindir / "codesign"
        script.write_text(FAKE_CODESIGN.format(record=record, code=code))
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
        return record
    return install


def test_signs_a_copy_once(tmp_path: Path, fake_codesign: Callable[..., Path]) -> None:
    record = fake_codesign()
    home = tmp_path / "home"
    signed = ensure_signed_interpreter(home, system="darwin")
    assert signed == str(home / "bin" / SIGNED_NAME)
    assert Path(signed).read_bytes() == Path(os.path.realpath(sys.executable)).read_bytes()
    calls = record.read_text().splitlines()
    assert len(calls) == 1
    args = calls[0].split()
    assert args[:5] == ["--force", "--sign", "-", "--entitlements",
                        str(home / "bin/hypervisor.entitlements")]
    assert Path(args[5]).parent == home / "bin"  # signed in place beside, then renamed
    plist = (home / "bin/hypervisor.entitlements").read_text()
    assert "<key>com.apple.security.hypervisor</key>" in plist and "<true/>" in plist
    assert ensure_signed_interpreter(home, system="darwin") == signed
    assert len(record.read_text().splitlines()) == 1  # idempotent: the stamp matches


def test_not_macos_is_a_no_op(tmp_path: Path, fake_codesign: Callable[..., Path]) -> None:
    record = fake_codesign()
    assert ensure_signed_interpreter(tmp_path, system="linux") == sys.executable
    assert not record.exists() and not (tmp_path / "bin").exists()


def test_codesign_failure_is_clear(tmp_path: Path, fake_codesign: Callable[..., Path]) -> None:
    fake_codesign(code=1)
    with pytest.raises(CodesignFailed) as info:
        ensure_signed_interpreter(tmp_path, system="darwin")
    assert "codesign failed with exit code 1" in str(info.value)
    assert not (tmp_path / "bin" / SIGNED_NAME).exists()


def test_codesign_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(CodesignFailed) as info:
        ensure_signed_interpreter(tmp_path, system="darwin")
    assert "xcode-select --install" in str(info.value)


def test_interpreter_env_points_at_this_python() -> None:
    env = interpreter_env()
    assert env["PYTHONHOME"] == sys.base_prefix
    assert json.dumps(env)  # plain strings only
