"""``make demo``: show the resolved worker spec of every bundled example.

For now this runs the real ``iii worker validate`` on each example project (no daemon needed);
a later step turns it into the full end-to-end demo (add, start, invoke, stop).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent
EXAMPLES = ("python-worker", "ts-worker", "rust-worker")


def iii_command() -> list[str]:
    """The installed ``iii`` console script: beside this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "iii"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("iii")
    if found is not None:
        return [found]
    return [sys.executable, "-c", "from client.cli import main; main()"]


def main() -> int:
    failures = 0
    for example in EXAMPLES:
        project = EXAMPLES_DIR / example
        print(f"== iii worker validate examples/{example}", flush=True)
        result = subprocess.run([*iii_command(), "worker", "validate", str(project)], check=False)
        if result.returncode != 0:
            failures += 1
        print(flush=True)
    if failures:
        print(f"demo: {failures} example(s) did not validate", file=sys.stderr)
        return 1
    print(f"demo: all {len(EXAMPLES)} examples validate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
