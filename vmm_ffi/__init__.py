"""The launcher side of sandboxes: one ``python -m vmm_ffi.launcher`` process per sandbox.

Modules: ``params`` (the versioned handshake), ``launch`` (spawn a launcher from the daemon),
``launcher`` (the launcher program) with ``launcher_startup`` (its params and lock) and
``launcher_exit`` (its sandbox's end), ``launcher_zygote`` (forks ephemeral launchers),
``namespace`` + ``sandbox_init`` + ``seccomp`` (namespace backend), ``userns`` + ``idmap`` +
``overlay`` + ``exit_recorder`` (ids and the root), ``enter`` + ``enter_server`` +
``sandbox_fs`` (running things in a live sandbox), ``availability`` (which backend can run),
``syscalls``, ``statefiles``, ``errors``.

Subpackages: ``network`` (a sandbox's own network: policy, pasta/slirp4netns helper, bridge),
``cgroups`` (resource limits), ``libkrun`` (the microVM backend).
Imports nothing of ours outside this package. The modules run with ``python -m`` keep their
names here: ``launcher``, ``launcher_zygote``, ``enter_server``, ``enter``, ``userns``,
``overlay``; so does the cffi module ``_seccomp_ffi``.
"""
