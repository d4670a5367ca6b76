"""Errors of the sandbox service, in upstream iii's structured shape (``errors.rs``).

Every failure of a ``sandbox::*`` call is a :class:`SandboxError` carrying upstream's S-code;
:meth:`SandboxError.payload` is upstream's ``to_payload`` (``type, code, message, docs_url,
retryable, fix, fix_note``). On the engine bus it travels as JSON in ``error.message``; on the
socket it is the JSON-RPC error's ``data``. Each S-code's class also derives from the daemon
error whose JSON-RPC code fits (``daemon.api.rpc.error_code_for`` resolves through bases):

    SandboxError (DaemonError)
    ├── SandboxInvalid      S001 S100 S210 S217   → InvalidArgument (-32602)
    ├── SandboxNotFound     S002 S211             → NotFound (-32001)
    ├── SandboxBusy         S003 S400             → Conflict (-32007)
    ├── SandboxRefused      S004 S200 S212-S216 S218 S219 → InvalidState (-32008)
    ├── SandboxImageFailed  S101 S102             → ImageError (-32004)
    └── SandboxUnavailable  S300                  → Unavailable (-32005)
"""

from __future__ import annotations

import enum
from typing import Any

from daemon.errors import (
    Conflict,
    DaemonError,
    ImageError,
    InvalidArgument,
    InvalidState,
    NotFound,
    Unavailable,
)

__all__ = ["DOCS_BASE", "SCode", "SandboxError", "request_error_payload", "sandbox_error"]

DOCS_BASE = ("https://github.com/iii-hq/iii/blob/main/crates/iii-worker/src/sandbox_daemon/"
             "README.md#")


class SCode(enum.Enum):
    """Upstream's codes (``SandboxErrorCode``)."""

    S001 = "S001"
    S002 = "S002"
    S003 = "S003"
    S004 = "S004"
    S100 = "S100"
    S101 = "S101"
    S102 = "S102"
    S200 = "S200"
    S210 = "S210"
    S211 = "S211"
    S212 = "S212"
    S213 = "S213"
    S214 = "S214"
    S215 = "S215"
    S216 = "S216"
    S217 = "S217"
    S218 = "S218"
    S219 = "S219"
    S300 = "S300"
    S400 = "S400"

    @property
    def error_type(self) -> str:
        """upstream ``error_type``: validation, config, internal, transient, execution,
        filesystem or platform."""
        return _TYPES[self]

    @property
    def retryable(self) -> bool:
        return self in (SCode.S102, SCode.S218)


_TYPES: dict[SCode, str] = {
    **dict.fromkeys((SCode.S001, SCode.S002, SCode.S003, SCode.S004), "validation"),
    **dict.fromkeys((SCode.S100, SCode.S400), "config"),
    SCode.S101: "internal",
    **dict.fromkeys((SCode.S102, SCode.S218), "transient"),
    SCode.S200: "execution",
    **dict.fromkeys((SCode.S210, SCode.S211, SCode.S212, SCode.S213, SCode.S214, SCode.S215,
                     SCode.S216, SCode.S217, SCode.S219), "filesystem"),
    SCode.S300: "platform",
}


# upstream's fix_note per code where it has one (errors.rs ``fix_hint``)
_NOTES: dict[SCode, str] = {
    SCode.S001: "see message: examples are inline",
    SCode.S002: "the sandbox is gone; call sandbox::create first",
    SCode.S004: "the sandbox is gone; call sandbox::create first",
    SCode.S100: "set `image` to a value listed in the message or add a catalog entry "
                "(sandboxes.catalog) in daemon.yaml",
    SCode.S101: "operator action required: run `iii image pull <image-ref>` on the host",
    SCode.S102: "transient: retry after a short delay",
    SCode.S200: "raise `timeout_ms` on the exec call or split the work into smaller steps",
    SCode.S003: "this sandbox already has max_concurrent_exec_per_sandbox execs running "
                "(default 4); wait for short ones, detach servers with `nohup <cmd> > "
                "/tmp/out.log 2>&1 &`, or sandbox::stop + sandbox::create to reset",
    SCode.S300: "platform-level failure; not auto-recoverable",
    SCode.S400: "platform-level failure; not auto-recoverable",
}


class SandboxError(DaemonError):
    """A failed ``sandbox::*`` call (see the module docstring for the classes)."""

    def __init__(self, code: SCode, message: str, *, fix: dict[str, Any] | None = None,
                 fix_note: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.fix = fix
        self.fix_note = fix_note if fix_note is not None else _NOTES.get(code)

    def payload(self) -> dict[str, Any]:
        """Upstream's wire payload."""
        return {"type": self.code.error_type, "code": self.code.name, "message": self.message,
                "docs_url": DOCS_BASE + self.code.name, "retryable": self.code.retryable,
                "fix": self.fix, "fix_note": self.fix_note}

    def data(self) -> dict[str, object] | None:
        return self.payload()


class SandboxInvalid(SandboxError, InvalidArgument):
    """Raised for a request that cannot be served as written (S001, S100, S210, S217)."""


class SandboxNotFound(SandboxError, NotFound):
    """Raised for an unknown sandbox id (S002) or a missing path in it (S211)."""


class SandboxBusy(SandboxError, Conflict):
    """Raised at a capacity bound: exec slots (S003) or sandboxes (S400)."""


class SandboxRefused(SandboxError, InvalidState):
    """Raised when the sandbox's state refuses the operation (stopped, timed out, wrong file
    type, exists, not empty, permission, i/o)."""


class SandboxImageFailed(SandboxError, ImageError):
    """Raised when a catalog image is not cached (S101) or cannot be pulled (S102)."""


class SandboxUnavailable(SandboxError, Unavailable):
    """Raised when no sandbox can boot here (S300)."""


_CLASSES: dict[SCode, type[SandboxError]] = {
    **dict.fromkeys((SCode.S001, SCode.S100, SCode.S210, SCode.S217), SandboxInvalid),
    **dict.fromkeys((SCode.S002, SCode.S211), SandboxNotFound),
    **dict.fromkeys((SCode.S003, SCode.S400), SandboxBusy),
    **dict.fromkeys((SCode.S101, SCode.S102), SandboxImageFailed),
    SCode.S300: SandboxUnavailable,
}


def sandbox_error(code: SCode, message: str, *, fix: dict[str, Any] | None = None,
                  fix_note: str | None = None) -> SandboxError:
    """The error of ``code`` (its class chosen by the table above)."""
    cls = _CLASSES.get(code, SandboxRefused)
    return cls(code, message, fix=fix, fix_note=fix_note)


def request_error_payload(method: str, message: str) -> dict[str, Any]:
    """The payload of a ``sandbox.*`` request that does not decode: S210 for ``fs``, else S001."""
    code = SCode.S210 if method.startswith("sandbox.fs.") else SCode.S001
    return sandbox_error(code, message).payload()
