"""The seccomp probe (``syscall_probe.c``), compiled static for any image by the test's ``cc``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("syscall_probe.c")


def build_syscall_probe(out_dir: Path) -> Path:
    """Compile the probe into ``out_dir/syscall-probe``; returns its path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc/gcc) for the syscall probe: "
                           "apt-get install gcc libc6-dev")
    out = out_dir / "syscall-probe"
    subprocess.run([cc, "-static", "-O1", "-Wall", "-Werror", "-o", str(out), str(SOURCE)],
                   check=True)
    return out


def parse(log: str) -> dict[str, str]:
    """``{"bpf": "EPERM", "fork": "ok", ...}`` from the probe's lines."""
    results: dict[str, str] = {}
    for line in log.splitlines():
        name, _, outcome = line.partition(" ")
        if outcome and not line.startswith("["):
            results[name] = outcome
    return results
