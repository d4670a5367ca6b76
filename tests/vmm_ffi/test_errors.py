"""Error texts of vmm_ffi: one line that names the call and the errno."""

from __future__ import annotations

import pytest

from vmm_ffi.errors import AlreadyRunning, LauncherError, LaunchFailed, SetupFailed, VmmError


@pytest.mark.parametrize(("call", "errno", "text"), [
    ("krun_set_root", -2, "krun_set_root failed: -2 (ENOENT: No such file or directory)"),
    ("krun_set_vm_config", -22, "krun_set_vm_config failed: -22 (EINVAL: Invalid argument)"),
    ("krun_start_enter", 13, "krun_start_enter failed: -13 (EACCES: Permission denied)"),
    ("krun_create_ctx", -9999, "krun_create_ctx failed: -9999 (9999: Unknown error 9999)"),
], ids=["enoent", "einval", "positive-normalised", "unknown"])
def test_vmm_error_text(call: str, errno: int, text: str) -> None:
    err = VmmError(call, errno)
    assert str(err) == text and err.call == call and err.errno == -abs(errno)


def test_hierarchy() -> None:
    assert issubclass(AlreadyRunning, LaunchFailed)
    for cls in (VmmError, SetupFailed, LaunchFailed):
        assert issubclass(cls, LauncherError)
    failed = LaunchFailed("launcher died", 3, ["a", "b"])
    assert str(failed) == "launcher died\na\nb" and failed.exit_code == 3
    assert str(SetupFailed("mount root", "EPERM")) == "mount root: EPERM"
