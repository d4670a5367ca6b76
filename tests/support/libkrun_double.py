"""Builds the libkrun test double (tests/support/libkrun_double.c) and reads its call log."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("libkrun_double.c")


def build_libkrun_double(out_dir: Path) -> Path:
    """Compile the double with ``cc -shared -fPIC`` into ``out_dir/libkrun.so.1``."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc/gcc) to build the libkrun double: "
                           "apt-get install gcc libc6-dev")
    out = out_dir / "libkrun.so.1"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(out),
                    str(SOURCE)], check=True, capture_output=True, text=True)
    return out


def read_calls(log: Path) -> list[dict[str, object]]:
    """Every recorded call, in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
