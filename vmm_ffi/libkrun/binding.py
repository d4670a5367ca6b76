"""cffi (ABI mode) binding over the subset of libkrun's ``include/libkrun.h`` we call.

Signatures checked against containers/libkrun ``include/libkrun.h``: every function returns
``int32_t`` (negative errno on failure); ``krun_start_enter`` only returns on failure.
``krun_set_exec`` takes the program path and its arguments *after* argv[0] (libkrun's init uses
``exec_path`` as argv[0]); argv, envp, port map and rlimits are NULL-terminated arrays, and envp
is never NULL (NULL would make libkrun copy the launcher's whole environment into the guest).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import cffi  # type: ignore[import-untyped]

from vmm_ffi.errors import LibraryNotFound, VmmError

CDEF = """
int32_t krun_set_log_level(uint32_t level);
int32_t krun_create_ctx(void);
int32_t krun_free_ctx(uint32_t ctx_id);
int32_t krun_set_vm_config(uint32_t ctx_id, uint8_t num_vcpus, uint32_t ram_mib);
int32_t krun_set_root(uint32_t ctx_id, const char *root_path);
int32_t krun_set_workdir(uint32_t ctx_id, const char *workdir_path);
int32_t krun_set_exec(uint32_t ctx_id, const char *exec_path, const char *const argv[],
                      const char *const envp[]);
int32_t krun_set_port_map(uint32_t ctx_id, const char *const port_map[]);
int32_t krun_set_rlimits(uint32_t ctx_id, const char *const rlimits[]);
int32_t krun_set_console_output(uint32_t ctx_id, const char *c_filepath);
int32_t krun_start_enter(uint32_t ctx_id);
"""

LIBRARY_ENV = "III_LIBKRUN_PATH"
LOG_LEVEL_ERROR = 1
RLIMIT_NOFILE = 7  # Linux resource number; libkrun's format is "RESOURCE=CUR:MAX"
NOFILE_LIMIT = 65536
INSTALL_HINT = ("install libkrun (and libkrunfw): on Fedora `dnf install libkrun`, on macOS "
                "`brew tap slp/krun && brew install libkrun`, elsewhere build it from "
                "https://github.com/containers/libkrun; or set III_LIBKRUN_PATH to libkrun.so.1")


def library_candidates() -> list[str]:
    """Names/paths tried by :func:`load`, override first."""
    override = os.environ.get(LIBRARY_ENV)
    if override:
        return [override]
    if sys.platform == "darwin":
        return ["libkrun.dylib", "/opt/homebrew/lib/libkrun.dylib"]
    return ["libkrun.so.1", "libkrun.so"]


class Libkrun:
    """A loaded libkrun. ``call`` turns every negative return into ``VmmError(call, errno)``."""

    def __init__(self, ffi: cffi.FFI, lib: Any, path: str) -> None:
        self.ffi, self.lib, self.path = ffi, lib, path
        self._keep: list[object] = []  # cffi buffers must outlive the calls that use them

    @classmethod
    def load(cls) -> Libkrun:
        """dlopen libkrun; raises ``LibraryNotFound`` naming what was tried and how to fix it."""
        ffi = cffi.FFI()
        ffi.cdef(CDEF)
        candidates = library_candidates()
        last = ""
        for candidate in candidates:
            try:
                return cls(ffi, ffi.dlopen(candidate), candidate)
            except OSError as exc:
                last = str(exc).split(".  Additionally", 1)[0]
        if os.environ.get(LIBRARY_ENV):
            raise LibraryNotFound(f"libkrun could not be loaded from {LIBRARY_ENV}: {last}",
                                  INSTALL_HINT)
        raise LibraryNotFound(f"libkrun not found (tried {', '.join(candidates)})", INSTALL_HINT)

    def call(self, name: str, *args: object) -> int:
        """Call ``krun_<name>``; negative results raise ``VmmError`` naming the call."""
        with map_krun_errors(name):
            result = int(getattr(self.lib, name)(*args))
        if result < 0:
            raise VmmError(name, result)
        return result

    def cstr(self, value: str) -> Any:
        buf = self.ffi.new("char[]", os.fsencode(value))
        self._keep.append(buf)
        return buf

    def cstr_array(self, values: Sequence[str]) -> Any:
        """A NULL-terminated ``const char *[]`` (an empty list gives ``[NULL]``)."""
        items = [self.cstr(v) for v in values] + [self.ffi.NULL]
        arr = self.ffi.new("char *[]", items)
        self._keep.append(arr)
        return arr


@contextmanager
def map_krun_errors(call: str) -> Iterator[None]:
    """The one boundary where foreign errors from the FFI become ``VmmError``."""
    try:
        yield
    except (OverflowError, TypeError) as exc:
        raise VmmError(call, 22) from exc  # EINVAL: a value cannot be represented


def configure(krun: Libkrun, *, root: str, workdir: str, argv: Sequence[str],
              env: dict[str, str], cpus: int, memory_mib: int, console: str) -> int:
    """Every configuration call of SPEC §8, in order; returns the context id."""
    krun.call("krun_set_log_level", LOG_LEVEL_ERROR)
    ctx = krun.call("krun_create_ctx")
    krun.call("krun_set_vm_config", ctx, cpus, memory_mib)
    krun.call("krun_set_root", ctx, krun.cstr(root))
    krun.call("krun_set_workdir", ctx, krun.cstr(workdir))
    envp = [f"{k}={v}" for k, v in env.items()]
    krun.call("krun_set_exec", ctx, krun.cstr(argv[0]), krun.cstr_array(argv[1:]),
              krun.cstr_array(envp))
    krun.call("krun_set_port_map", ctx, krun.cstr_array([]))
    krun.call("krun_set_rlimits", ctx,
              krun.cstr_array([f"{RLIMIT_NOFILE}={NOFILE_LIMIT}:{NOFILE_LIMIT}"]))
    krun.call("krun_set_console_output", ctx, krun.cstr(console))
    return ctx


def start_enter(krun: Libkrun, ctx: int) -> VmmError:
    """``krun_start_enter``: does not return on success; any return is the error returned."""
    with map_krun_errors("krun_start_enter"):
        result = int(krun.lib.krun_start_enter(ctx))
    return VmmError("krun_start_enter", result if result < 0 else -5)  # EIO when >= 0
