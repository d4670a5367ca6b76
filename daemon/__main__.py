"""``python -m daemon run [--config PATH] [--keep-workers]`` (what ``iii daemon run`` execs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m daemon", description="The iii daemon.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="Run the daemon in the foreground.")
    run.add_argument("--config", type=Path, default=None,
                     help="Worker registry (config.yaml); default $III_CONFIG_PATH or "
                          "$III_HOME/config.yaml.")
    run.add_argument("--keep-workers", action="store_true",
                     help="On shutdown leave workers running for the next daemon to reattach.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    from daemon.app import main as run_daemon

    return run_daemon(config=args.config, keep_workers=args.keep_workers)


if __name__ == "__main__":
    sys.exit(main())
