"""macOS: an interpreter entitled to use Hypervisor.framework, made once per interpreter.

libkrun on macOS needs the ``com.apple.security.hypervisor`` entitlement on the *process*, so
the launcher must run under a signed interpreter. We copy ``sys.executable`` into
``$III_HOME/bin/`` and ad-hoc sign the copy with that entitlement, once: a stamp records which
interpreter (path, size, mtime) the copy came from, so later calls do nothing until it changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from vmm_ffi.errors import LauncherError
from vmm_ffi.statefiles import write_atomic

SIGNED_NAME = "python3-iii"
STAMP_NAME = ".python3-iii.stamp"
ENTITLEMENTS_NAME = "hypervisor.entitlements"
CODESIGN_TIMEOUT_S = 60.0
ENTITLEMENTS = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
    <key>com.apple.security.hypervisor</key>
    <true/>
</dict>
</plist>
"""


class CodesignFailed(LauncherError):
    """Raised when ``codesign`` is missing or refuses to sign the interpreter copy."""


def _fingerprint(interpreter: str) -> str:
    real = os.path.realpath(interpreter)
    st = os.stat(real)
    return f"{real}\n{st.st_size}\n{st.st_mtime_ns}\n"


def ensure_signed_interpreter(home: str | os.PathLike[str], *,
                              interpreter: str = sys.executable,
                              system: str = sys.platform) -> str:
    """Path of an interpreter allowed to run libkrun (``interpreter`` itself off macOS)."""
    if system != "darwin":
        return interpreter
    bin_dir = Path(home) / "bin"
    target = bin_dir / SIGNED_NAME
    stamp = bin_dir / STAMP_NAME
    wanted = _fingerprint(interpreter)
    if target.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(target)
    bin_dir.mkdir(parents=True, exist_ok=True)
    entitlements = bin_dir / ENTITLEMENTS_NAME
    write_atomic(entitlements, ENTITLEMENTS)
    tmp = bin_dir / f".{SIGNED_NAME}.{os.getpid()}.tmp"
    shutil.copy2(os.path.realpath(interpreter), tmp)
    try:
        done = subprocess.run(
            ["codesign", "--force", "--sign", "-", "--entitlements", str(entitlements),
             str(tmp)], capture_output=True, text=True, timeout=CODESIGN_TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        tmp.unlink(missing_ok=True)
        raise CodesignFailed("codesign not found: install the Xcode command line tools "
                             "(`xcode-select --install`)") from exc
    except subprocess.TimeoutExpired as exc:
        tmp.unlink(missing_ok=True)
        raise CodesignFailed(f"codesign did not finish within {CODESIGN_TIMEOUT_S:g}s") from exc
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CodesignFailed(f"codesign failed with exit code {done.returncode}: {detail[0]}")
    os.replace(tmp, target)
    write_atomic(stamp, wanted.encode())
    return str(target)


def interpreter_env() -> dict[str, str]:
    """Env that lets the copied interpreter find this interpreter's stdlib and packages."""
    return {"PYTHONHOME": sys.base_prefix,
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def launcher_interpreter(home: str | os.PathLike[str], *,
                         system: str | None = None) -> tuple[str, dict[str, str]]:
    """The interpreter to spawn launchers with, and the env it needs on top of the usual.

    Off macOS: this interpreter, nothing extra. On macOS: the signed copy (made on first use),
    which finds the stdlib through ``PYTHONHOME``; the launcher's ``PYTHONPATH`` names our
    packages already (``vmm_ffi.launch.launcher_python_path``). Raises ``CodesignFailed``.
    """
    python = ensure_signed_interpreter(home, system=sys.platform if system is None else system)
    if python == sys.executable:
        return python, {}
    return python, {"PYTHONHOME": interpreter_env()["PYTHONHOME"]}
