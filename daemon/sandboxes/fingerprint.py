"""The dependency fingerprint kept in the marker ``var/.iii-prepared`` (SPEC §7).

It covers the setup and install commands and the dependency files at the project root. Each part
is hashed separately so a mismatch can say why ("requirements.txt changed") instead of only
"something changed".
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from pathlib import Path

import msgspec

MARKER_VERSION = 1
DEPENDENCY_FILES = (
    "package.json", "package-lock.json", "yarn.lock", "pnpm-lock.yaml", "bun.lock", "bun.lockb",
    "pyproject.toml", "Cargo.toml", "Cargo.lock",
)
DEPENDENCY_PATTERNS = ("requirements*.txt",)
_MAX_DEP_FILE = 64 << 20


class Fingerprint(msgspec.Struct, frozen=True, kw_only=True):
    """Per-part sha256 digests; ``digest`` is the overall fingerprint stored in the marker."""

    version: int = MARKER_VERSION
    setup: str
    install: str
    files: dict[str, str]

    @property
    def digest(self) -> str:
        h = hashlib.sha256(b"iii-prepared\0")
        h.update(f"{self.setup}\0{self.install}\0".encode())
        for name in sorted(self.files):
            h.update(f"{name}\0{self.files[name]}\0".encode())
        return h.hexdigest()


class Marker(msgspec.Struct, frozen=True, kw_only=True):
    """What ``var/.iii-prepared`` holds."""

    fingerprint: str
    parts: Fingerprint


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _is_dependency_file(name: str) -> bool:
    return name in DEPENDENCY_FILES or any(fnmatch.fnmatchcase(name, p)
                                           for p in DEPENDENCY_PATTERNS)


def _hash_entry(dir_fd: int, name: str) -> str | None:
    # A symlinked dependency file is hashed as its link text: never read through it.
    st = os.lstat(name, dir_fd=dir_fd)
    if stat.S_ISLNK(st.st_mode):
        return "link:" + _sha(os.fsencode(os.readlink(name, dir_fd=dir_fd)))
    if not stat.S_ISREG(st.st_mode):
        return None
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        h = hashlib.sha256()
        remaining = _MAX_DEP_FILE
        while remaining and (chunk := os.read(fd, min(1 << 20, remaining))):
            h.update(chunk)
            remaining -= len(chunk)
        return h.hexdigest()
    finally:
        os.close(fd)


def compute_fingerprint(project: Path, setup: str, install: str) -> Fingerprint:
    """Fingerprint of the scripts and of the dependency files at ``project``'s root."""
    files: dict[str, str] = {}
    fd = os.open(project, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in sorted(os.listdir(fd)):
            if _is_dependency_file(name):
                digest = _hash_entry(fd, name)
                if digest is not None:
                    files[name] = digest
    finally:
        os.close(fd)
    return Fingerprint(setup=_sha(setup.encode()), install=_sha(install.encode()), files=files)


def encode_marker(fp: Fingerprint) -> bytes:
    return msgspec.json.encode(Marker(fingerprint=fp.digest, parts=fp)) + b"\n"


def decode_marker(data: bytes | None) -> Marker | None:
    """The marker's content, or None when absent or unreadable (treated as "not prepared")."""
    if not data:
        return None
    try:
        return msgspec.json.decode(data, type=Marker)
    except msgspec.DecodeError:
        return None


def explain_change(old: Fingerprint, new: Fingerprint) -> str:
    """Why two fingerprints differ, for humans: ``"requirements.txt changed"``."""
    reasons: list[str] = []
    for name in sorted(old.files.keys() | new.files.keys()):
        if name not in old.files:
            reasons.append(f"{name} added")
        elif name not in new.files:
            reasons.append(f"{name} removed")
        elif old.files[name] != new.files[name]:
            reasons.append(f"{name} changed")
    if old.install != new.install:
        reasons.append("install script changed")
    if old.setup != new.setup:
        reasons.append("setup script changed (setup runs only on first start; use --force)")
    return ", ".join(reasons) or "fingerprint format changed"
