"""Running things inside a live sandbox: what ``iii worker exec`` and ``sandbox::fs::*`` run.

``enter_server`` (``python -S -m vmm_ffi.exec.enter_server FD``: the daemon's fork server, one
helper per exec), ``enter`` (a helper: join the sandbox init's namespaces and cgroups, become
its root, exec the command), ``sandbox_fs`` (the file operations a helper runs there in place of
an exec).
"""
