"""Ephemeral sandboxes: upstream iii's ``sandbox::*`` service (``iii-sandbox``) on the daemon.

Short-lived namespace sandboxes booted from the image cache for one-shot code runs and agent
tool calls, served on the engine bus (``engine.py``: upstream's 16 function ids and payloads)
and on the socket (``sandbox.*`` methods, the ``iii sandbox`` CLI group). Modules:

- ``errors.py``   upstream's S-codes and structured error payload
- ``catalog.py``  catalog names, allowlist, ``allow_any_image`` (daemon.yaml ``sandboxes:``)
- ``commands.py`` the request shapes (cmd, env, stdin, lang) normalised
- ``registry.py`` live sandboxes, exec slots, the activity clock
- ``boot.py``     boot / destroy one sandbox; the sweep at daemon start
- ``runner.py``   exec and fs operations through the exec fork server, on pipes
- ``fs.py``       the ten ``sandbox::fs::*`` calls
- ``pool.py``     the warm pool
- ``service.py``  ``SandboxService``: create, exec, run, list, stop, catalog
- ``engine.py``   the functions on the engine bus
- ``maintenance.py`` idle reaping and pool refills
"""

from daemon.ephemeral.boot import SandboxBooter
from daemon.ephemeral.engine import SandboxEngineApi
from daemon.ephemeral.errors import SandboxError, SCode
from daemon.ephemeral.maintenance import maintain
from daemon.ephemeral.service import SandboxService

__all__ = ["SCode", "SandboxBooter", "SandboxEngineApi", "SandboxError", "SandboxService",
           "maintain"]
