"""``python -S -m vmm_ffi.launcher BOOTSTRAP``: the command line every launcher keeps for life.

The daemon recognises a running launcher in ``/proc`` by exactly this ``-m`` name, also one
an older daemon started, so it must not change. Only a shim: the program is
``vmm_ffi.launcher.program``, imported under its own name (runpy runs this file as
``__main__``, so nothing here should be state other modules import).
"""

import sys

from vmm_ffi.launcher.program import main

if __name__ == "__main__":
    sys.exit(main())
