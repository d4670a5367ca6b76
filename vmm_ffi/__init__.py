"""The launcher side of sandboxes: one ``python -m vmm_ffi.launcher`` process per sandbox.

Modules: ``params`` (the versioned handshake), ``launch`` (spawn a launcher from the daemon),
``launcher`` (the launcher program), ``namespace`` + ``sandbox_init`` (namespace backend),
``libkrun`` + ``krun_vmm`` (libkrun backend via cffi), ``availability`` (which backend can run),
``codesign`` (macOS entitlement), ``cgroups``, ``syscalls``, ``statefiles``, ``errors``.
Imports nothing of ours outside this package.
"""
