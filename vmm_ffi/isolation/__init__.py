"""What the launcher builds a sandbox from on Linux: namespaces, the root, id maps, seccomp.

``namespace`` (user + mount (+ pid, uts, ipc) namespaces, the root, /proc, /dev, /tmp),
``sandbox_init`` (the sandbox's PID 1 and the exec of the workload), ``overlay`` (the overlay
root's mount options; ``python -m vmm_ffi.isolation.overlay probe DIR``), ``userns`` (a user
namespace with our id maps; ``python -m vmm_ffi.isolation.userns remove PATH``), ``idmap``
(ids shifted into a subordinate range, files shown through idmapped mounts), ``seccomp``
(no_new_privs + the filter, through the pre-parsed cffi module ``vmm_ffi._seccomp_ffi``).
The libkrun backend uses the user namespace, the root and no_new_privs from here too.
"""
