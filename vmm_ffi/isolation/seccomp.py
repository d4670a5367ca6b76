"""``no_new_privs`` + the sandbox's seccomp filter (namespace backend), built with libseccomp.

The filter is a deny-list with a default of *allow*: it refuses, with EPERM, what the default
profiles of container runtimes (moby's ``profiles/seccomp/default.json``, containers/common's
``seccomp.json``) refuse to a container without CAP_SYS_ADMIN and friends, and nothing more, so
toolchains (Python, Node, Bun, Rust, apt/dpkg) keep working. An allow-list would have to track
every new syscall a libc starts using; a deny-list only has to track the dangerous ones.
A refused call answers EPERM (never SIGSYS): the workload sees an ordinary error and keeps
running. The exception is ``clone3``, which answers ENOSYS as in moby: its flags live in a
struct a filter cannot read, so it is refused wholesale and libcs fall back to ``clone``, whose
namespace flags the filter does see.

libseccomp is loaded through cffi in out-of-line ABI mode (``dlopen("libseccomp.so.2")``, Debian
``libseccomp2``): no compiler at run time, and the declarations come pre-parsed from the
generated ``vmm_ffi/_seccomp_ffi.py`` (``emit_ffi_module``), because parsing them at start
(pycparser) cost ~40 ms of CPU on every launch, a third of the whole sandbox start. ``load()`` runs in the launcher, before it forks
(dlopen after fork in a threaded process can hang), and fails with the package to install.
``apply()`` runs in the sandbox init once the root is built, just before it forks the workload.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Any

from vmm_ffi.errors import SetupFailed

# Shown in the launch result (and ``iii worker inspect``); bump the version whenever the rules
# below change, so what a running worker was started with stays identifiable.
FILTER_NAME = "iii-default/1"
LIBRARY = "libseccomp.so.2"
INSTALL_HINT = "apt-get install libseccomp2"

PR_SET_NO_NEW_PRIVS = 38

_CDEF = """
typedef void *scmp_filter_ctx;
struct scmp_arg_cmp { unsigned int arg; int op; uint64_t datum_a; uint64_t datum_b; };
scmp_filter_ctx seccomp_init(uint32_t def_action);
void seccomp_release(scmp_filter_ctx ctx);
int seccomp_load(scmp_filter_ctx ctx);
int seccomp_arch_add(scmp_filter_ctx ctx, uint32_t arch_token);
int seccomp_syscall_resolve_name(const char *name);
int seccomp_attr_set(scmp_filter_ctx ctx, int attr, uint32_t value);
int seccomp_rule_add_array(scmp_filter_ctx ctx, uint32_t action, int syscall,
                           unsigned int arg_cnt, const struct scmp_arg_cmp *arg_array);
"""

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO_BASE = 0x00050000
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
SCMP_FLTATR_CTL_NNP = 3  # let us set no_new_privs ourselves (and say so if it fails)
_NR_SCMP_ERROR = -1
# The compat ABIs a 64-bit kernel also runs (i386 and x32 on x86_64, arm on aarch64), as moby
# lists them: a filter without them answers their syscalls with SIGSYS (libseccomp's "bad
# arch" default), which would kill a 32-bit program outright instead of refusing the same calls.
_COMPAT_ARCHES = {"x86_64": (0x40000003, 0x4000003E), "aarch64": (0x40000028,)}

# Refused outright (moby/podman: only with CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_BOOT, ...,
# none of which a default container has). Names unknown on this architecture are skipped.
DENIED = (
    # kernel and modules
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "create_module", "query_module", "get_kernel_syms", "reboot", "swapon", "swapoff",
    # the kernel's own attack surface: eBPF, perf, the keyring, userfaultfd, io_uring
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # mounts and namespaces: the root is built before the filter; nothing may change it after
    "mount", "umount", "umount2", "pivot_root", "mount_setattr", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick", "unshare", "setns",
    # file handles bypass the mount's view of paths (the "shocker" escape)
    "open_by_handle_at", "name_to_handle_at",
    # clocks, accounting, quotas, raw I/O ports, obsolete calls
    "settimeofday", "stime", "clock_settime", "clock_settime64", "clock_adjtime",
    "clock_adjtime64", "adjtimex", "acct", "quotactl", "quotactl_fd", "ioperm", "iopl",
    "vm86", "vm86old", "uselib", "ustat", "sysfs", "_sysctl", "nfsservctl",
    "lookup_dcookie", "vhangup",
    # NUMA policy and other processes' memory layout (moby: CAP_SYS_NICE / CAP_SYS_PTRACE)
    "mbind", "set_mempolicy", "move_pages", "migrate_pages", "kcmp",
)

# clone(2) creating any new namespace (moby allows clone only without these flags).
# NEWNS, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWCGROUP (as moby's mask).
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                         0x40000000, 0x02000000)
# The sandbox init is PID 1 of the sandbox's pid namespace: the workload runs as root in its
# user namespace (CAP_SYS_PTRACE there), so only the filter keeps it from tracing the init.
INIT_PID = 1

_ffi: Any = None
_lib: Any = None


def load() -> None:
    """dlopen libseccomp (once per process); raises ``SetupFailed`` naming the package."""
    global _ffi, _lib  # one handle per process: the init inherits it through fork
    if _lib is not None:
        return
    from vmm_ffi._seccomp_ffi import ffi
    try:
        lib = ffi.dlopen(LIBRARY)
    except OSError as exc:
        raise SetupFailed("seccomp", f"{LIBRARY} not found ({INSTALL_HINT}); the sandbox is "
                          "not started without its seccomp filter") from exc
    _ffi, _lib = ffi, lib


def emit_ffi_module(path: str) -> None:
    """Write the pre-parsed declarations (``vmm_ffi/_seccomp_ffi.py``) after editing _CDEF."""
    import cffi  # type: ignore[import-untyped]
    builder = cffi.FFI()
    builder.set_source("vmm_ffi._seccomp_ffi", None)
    builder.cdef(_CDEF)
    builder.emit_python_code(path)


def set_no_new_privs() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS): no setuid bit or file capability raises privileges again."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0),
                  ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise SetupFailed("no_new_privs", f"prctl: {errno.errorcode.get(err, err)}")


def apply() -> None:
    """no_new_privs, then load ``FILTER_NAME`` into this process (inherited by its children)."""
    load()
    ffi, lib = _ffi, _lib
    set_no_new_privs()
    eperm = SCMP_ACT_ERRNO_BASE | errno.EPERM
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if ctx == ffi.NULL:
        raise SetupFailed("seccomp", "seccomp_init failed")
    try:
        def rule(name: str, action: int, *cmps: tuple[int, int, int, int]) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr == _NR_SCMP_ERROR:
                return  # not a syscall on this architecture (vm86, iopl on arm64, ...)
            array = ffi.new("struct scmp_arg_cmp[]", list(cmps)) if cmps else ffi.NULL
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
            if rc < 0:
                raise SetupFailed("seccomp", f"rule for {name}: {errno.errorcode.get(-rc, rc)}")
        _check(lib.seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0), "attr")
        for arch in _COMPAT_ARCHES.get(os.uname().machine, ()):
            rc = lib.seccomp_arch_add(ctx, arch)
            if rc < 0 and rc != -errno.EEXIST:
                raise SetupFailed("seccomp", f"arch {arch:#x}: {errno.errorcode.get(-rc, rc)}")
        for name in DENIED:
            rule(name, eperm)
        for flag in CLONE_NAMESPACE_FLAGS:
            rule("clone", eperm, (0, SCMP_CMP_MASKED_EQ, flag, flag))
        rule("clone3", SCMP_ACT_ERRNO_BASE | errno.ENOSYS)
        rule("ptrace", eperm, (1, SCMP_CMP_EQ, INIT_PID, 0))
        for name in ("process_vm_readv", "process_vm_writev"):
            rule(name, eperm, (0, SCMP_CMP_EQ, INIT_PID, 0))
        _check(lib.seccomp_load(ctx), "load")
    finally:
        lib.seccomp_release(ctx)


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise SetupFailed("seccomp", f"seccomp {what}: {errno.errorcode.get(-rc, rc)}")
