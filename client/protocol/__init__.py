"""The wire: every type, method table, error code and constant of the daemon's socket protocol
and of the iii functions it serves, shared by the daemon, the CLI and other clients.

This package is a leaf: it imports nothing of ours outside it and neither typer nor rich (a test
over the import graph holds it to that), and it is the only part of ``client`` that ``daemon``,
``vmm_ffi`` and ``manifests`` may import. This file imports nothing, so that
``client.protocol.constants`` stays free of msgspec for the CLI's fast path.

- ``base``: ``Params`` and ``Result``, the two bases of every wire type;
- ``constants``: protocol version, line limit, error codes (standard library only);
- ``messages``: the ``daemon.*``, ``worker.*``, ``image.*`` structs and notifications;
- ``sandbox``: the ephemeral sandbox service's structs (upstream's ``sandbox::*``);
- ``methods``: socket method → types, iii function → socket method.
"""
