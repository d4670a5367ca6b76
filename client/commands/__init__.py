"""The typer command tree of ``iii`` (SPEC §12): worker, image, daemon, service and sandbox
groups. Imported only when typer parses the command line (``client.cli`` answers a few commands
without it).

Each command is a thin call of one socket method (``client.rpc_client``, mostly through
``client.actions``); human output comes from ``client.output``. ``--json`` prints the protocol
result verbatim. Errors: ``error: …`` (+ ``hint: …``) on stderr and exit 1; usage errors exit 2
(click).

- ``common``: the groups, ``run_cli``, ``--json``, typer options built from ``client.cli_grammar``;
- ``worker_lifecycle``: ``worker validate|init|add|start|restart|stop|remove``;
- ``worker_io``: ``worker export|list|inspect|exec|status|logs``;
- ``image_daemon``: ``image pull|list``, ``daemon run|status|stop``.

The modules register their commands on import, in the order ``--help`` lists them.
"""

from __future__ import annotations

# Registration order is --help's order: the lifecycle commands come first.
from client.commands import worker_lifecycle

# isort: split
from client.commands import image_daemon, worker_io
from client.commands.common import app, daemon_app, image_app, run_cli, worker_app
from client.commands.sandbox import sandbox_app
from client.commands.service import service_app
from client.commands.worker_lifecycle import resolve_target

__all__ = ["app", "daemon_app", "image_app", "image_daemon", "resolve_target", "run_cli",
           "worker_app", "worker_io", "worker_lifecycle"]

app.add_typer(worker_app, name="worker")
app.add_typer(image_app, name="image")
app.add_typer(daemon_app, name="daemon")
app.add_typer(service_app, name="service")
app.add_typer(sandbox_app, name="sandbox")
