"""CLI start-up against a baseline checkout, same daemon, same run. Printed only.

``iii worker list --json`` (the typer-free path scripts call in loops) and ``iii worker list``
(the table), each run as ``python -m client.cli`` from this tree and from ``--baseline DIR`` (an
older checkout of this repository, e.g. ``git worktree add /tmp/base <commit>``) in turn, A B A
B …, with 20 workers listed; medians and the ratio this/baseline. Without ``--baseline`` the
floor is ``python -c pass``.

    python -m bench cli_startup                 # against python -c pass
    python -m bench.cli_startup --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.daemon import listing_daemon

RUNS = 21
THIS_TREE = Path(__file__).resolve().parents[1]
COMMANDS = (("worker", "list", "--json"), ("worker", "list"))


def wall(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def compare(args: tuple[str, ...], baseline: Path | None, env: dict[str, str]) -> str:
    ours = [sys.executable, "-m", "client.cli", *args]
    theirs = ours if baseline else [sys.executable, "-c", "pass"]
    where = baseline or THIS_TREE
    a: list[float] = []
    b: list[float] = []
    wall(ours, THIS_TREE, env)  # warm-up: page cache, .pyc
    wall(theirs, where, env)
    for _ in range(RUNS):
        a.append(wall(ours, THIS_TREE, env))
        b.append(wall(theirs, where, env))
    ratio = statistics.median(x / y for x, y in zip(a, b, strict=True))
    label = "baseline" if baseline else "python -c pass"
    return (f"iii {' '.join(args)}: {statistics.median(a) * 1000:.1f} ms vs {label} "
            f"{statistics.median(b) * 1000:.1f} ms -> {ratio:.2f}x (median of pair ratios)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="an older checkout to compare against")
    options = parser.parse_args(sys.argv[1:])
    os.environ.pop("III_SOCKET", None)
    with listing_daemon() as daemon:
        env = dict(daemon.env)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # both trees run from their cached bytecode
        for args in COMMANDS:
            print(compare(args, options.baseline, env), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
