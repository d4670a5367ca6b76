"""The launcher: one ``python -S -m vmm_ffi.launcher BOOTSTRAP`` process per sandbox.

``program`` (the ``Launcher``: limits, root, fork, answer, wait, record the end; ``main``),
``startup`` (its params read and checked, the state dir's lock), ``exit_status`` (how the
sandbox's end becomes ``exit.json``), ``exit_recorder`` (the host-side helper that writes it for
an id-shifted launcher), ``zygote`` (``python -S -m vmm_ffi.launcher.zygote FD``: forks the
launchers of ephemeral sandboxes from one pre-imported process). ``__main__`` is the entry.

Deliberately empty: ``python -m vmm_ffi.launcher`` imports this package before it runs
``__main__``, on every sandbox start.
"""
