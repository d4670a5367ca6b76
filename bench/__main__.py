"""``python -m bench [name ...]``: run every bench module's ``main()`` (or only the named ones)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    wanted = set(sys.argv[1:])
    status = 0
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if info.name.startswith("_") or (wanted and info.name not in wanted):
            continue
        print(f"== bench.{info.name}", flush=True)
        sys.argv = [f"bench/{info.name}.py"]  # each main() parses its own (default) options
        result = importlib.import_module(f"bench.{info.name}").main()
        status = status or (result if isinstance(result, int) else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
