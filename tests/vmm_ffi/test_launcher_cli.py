"""``python -m vmm_ffi.launcher``: params from a file or stdin, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.vmm_ffi.conftest import Sandboxes, replace
from vmm_ffi.errors import LaunchFailed
from vmm_ffi.params import OverlayRoot, decode_result, encode

LAUNCHER = [sys.executable, "-m", "vmm_ffi.launcher"]
RUN_TIMEOUT_S = 30


def run_launcher(args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(LAUNCHER + args, input=stdin, capture_output=True,
                          timeout=RUN_TIMEOUT_S, check=False)


def test_params_on_stdin(sandboxes: Sandboxes) -> None:
    params = sandboxes.params(["sh", "-c", "echo via-stdin; exit 4"])
    done = run_launcher([], stdin=encode(params))
    assert done.returncode == 4
    result = decode_result(done.stdout.splitlines()[0])
    assert len(done.stdout.splitlines()) == 1 and result.backend == "namespace"
    assert "via-stdin" in Path(params.log_path).read_text()


@pytest.mark.parametrize(("payload", "expected"), [
    (b"not json", "invalid launch params in <stdin>: JSON is malformed"),
    (b"{}", "invalid launch params in <stdin>: Object missing required field"),
    (b'{"name": 5}', "invalid launch params in <stdin>: Expected `str`, got `int` - at `$.name`"),
    (b"\x00\xff" * 100, "invalid launch params in <stdin>"),
], ids=["not-json", "empty-object", "wrong-type", "binary"])
def test_invalid_params_exit_2_with_one_line(payload: bytes, expected: str) -> None:
    done = run_launcher([], stdin=payload)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), lines
    assert done.stdout == b""


def test_missing_spec_file() -> None:
    done = run_launcher(["/nonexistent/spec.json"])
    assert done.returncode == 2
    assert done.stderr.decode().strip() == (
        "error: cannot read launch params /nonexistent/spec.json: No such file or directory")


def test_missing_lower_dir_names_the_field(sandboxes: Sandboxes, tmp_path: Path) -> None:
    params = sandboxes.params(["true"])
    rootfs = replace(params.rootfs, lower=[str(tmp_path / "gone")])  # type: ignore[arg-type]
    spec = tmp_path / "spec.json"
    spec.write_bytes(encode(replace(params, rootfs=rootfs)))
    done = run_launcher([str(spec)])
    assert done.returncode == 2
    assert f"rootfs.lower[0] '{tmp_path / 'gone'}' is not a directory" in done.stderr.decode()


@pytest.mark.parametrize("env", [{"A=B": "x"}, {"": "x"}, {"A": "nul\x00"}],
                         ids=["equals", "empty", "nul"])
def test_unsafe_env_is_rejected(sandboxes: Sandboxes, env: dict[str, str]) -> None:
    done = run_launcher([], stdin=encode(sandboxes.params(["true"], env=env)))
    assert done.returncode == 2 and b"env key" in done.stderr


def test_setup_failure_is_125_with_the_step(sandboxes: Sandboxes, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    params = sandboxes.params(["true"])
    bad = OverlayRoot(lower=params.rootfs.lower, upper=str(blocker / "upper"),  # type: ignore
                      work=str(blocker / "work"))
    params = replace(params, rootfs=bad)
    with pytest.raises(LaunchFailed) as info:
        sandboxes.spawn(params)
    assert info.value.exit_code == 125
    assert "sandbox setup failed: mount root" in str(info.value)
    assert "Not a directory" in Path(params.exit_path).read_text()
