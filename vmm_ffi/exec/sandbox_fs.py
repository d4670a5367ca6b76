"""The ``sandbox::fs::*`` operations, run *inside* a sandbox by an exec helper.

The daemon's fork server forks a helper that joins the sandbox init's namespaces and becomes the
sandbox's root (``vmm_ffi.exec.enter``); for an fs operation it then calls :func:`run` instead of
``execve``. So every path is resolved by the kernel in the sandbox's own mount namespace, from
its own root: ``..`` stops at ``/`` and a symlink to ``/etc`` is the sandbox's ``/etc``. Nothing
of the host is reachable, whatever the path says, and files get the sandbox's owners.

Protocol: the operation is a JSON object (``{"op": "write", "path": ..., ...}``, the request's
fields); ``write`` reads the content from stdin. The answer is one JSON line on stdout:
``{"ok": {...}}`` or ``{"error": {"kind", "path", "message"}}``; ``read`` follows its line with
the file's bytes. Every module used here is imported up front: after ``setns`` the host's
file system (and its Python library) is gone.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import re
import shutil
import stat
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["FsFailure", "run"]

_ERRNO_KINDS = {errno.ENOENT: "not_found", errno.ENOTDIR: "wrong_type",
                errno.EISDIR: "wrong_type", errno.EEXIST: "already_exists",
                errno.ENOTEMPTY: "not_empty", errno.EACCES: "permission",
                errno.EPERM: "permission", errno.EROFS: "permission"}
_BINARY_SNIFF = 8192


class FsFailure(Exception):
    """One failed operation: ``kind`` is what the daemon maps to an S-code."""

    def __init__(self, kind: str, path: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.path, self.message = kind, path, message


def _fail_os(path: str, exc: OSError) -> FsFailure:
    kind = _ERRNO_KINDS.get(exc.errno or 0, "io")
    return FsFailure(kind, path, f"{path}: {exc.strerror or exc}")


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def _entry(name: str, st: os.stat_result) -> dict[str, Any]:
    return {"name": name, "is_dir": stat.S_ISDIR(st.st_mode), "size": st.st_size,
            "mode": _mode(st), "mtime": int(st.st_mtime), "is_symlink": stat.S_ISLNK(st.st_mode)}


def _octal(text: str) -> int:
    return int(text, 8) & 0o7777


def _parent_must_exist(path: str, parents: bool) -> None:
    parent = os.path.dirname(os.path.normpath(path)) or "/"
    if parents:
        os.makedirs(parent, exist_ok=True)
    elif not os.path.isdir(parent):
        kind = "wrong_type" if os.path.lexists(parent) else "parent_not_found"
        raise FsFailure(kind, path, f"parent directory {parent} does not exist"
                        if kind == "parent_not_found" else f"{parent} is not a directory")


def op_read(req: dict[str, Any], out: Any) -> None:
    path, limit = req["path"], int(req["max_bytes"])
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FsFailure("wrong_type", path, f"{path} is a directory; use sandbox::fs::ls")
        if not stat.S_ISREG(st.st_mode):
            raise FsFailure("wrong_type", path, f"{path} is not a regular file")
        if st.st_size > limit:
            raise FsFailure("too_large", path, f"{path} is {st.st_size} bytes, over the "
                            f"inline limit of {limit} (max_file_bytes)")
        data = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))[:limit]
    finally:
        os.close(fd)
    out.write(json.dumps({"ok": {"size": len(data), "mode": _mode(st),
                                 "mtime": int(st.st_mtime)}}).encode() + b"\n")
    out.write(data)


def op_write(req: dict[str, Any], out: Any) -> dict[str, Any]:
    path, limit = req["path"], int(req["max_bytes"])
    _parent_must_exist(path, bool(req.get("parents")))
    if os.path.isdir(path):
        raise FsFailure("wrong_type", path, f"{path} is a directory")
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise FsFailure("too_large", path, f"content is over the limit of {limit} bytes")
    mode = _octal(req.get("mode", "0644"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return {"bytes_written": len(data), "path": path}


def op_ls(req: dict[str, Any], out: Any) -> dict[str, Any]:
    path = req["path"]
    if not os.path.isdir(path):
        if os.path.lexists(path):
            raise FsFailure("wrong_type", path, f"{path} is not a directory")
        raise FsFailure("not_found", path, f"{path}: no such directory")
    entries = [_entry(e.name, e.stat(follow_symlinks=False)) for e in os.scandir(path)]
    return {"entries": sorted(entries, key=lambda e: e["name"])}


def op_stat(req: dict[str, Any], out: Any) -> dict[str, Any]:
    path = req["path"]
    return _entry(os.path.basename(os.path.normpath(path)) or "/", os.lstat(path))


def op_mkdir(req: dict[str, Any], out: Any) -> dict[str, Any]:
    path, mode, parents = req["path"], _octal(req.get("mode", "0755")), bool(req.get("parents"))
    if parents and os.path.isdir(path):
        return {"created": False}
    _parent_must_exist(path, parents)
    os.mkdir(path, mode)
    os.chmod(path, mode)
    return {"created": True}


def op_rm(req: dict[str, Any], out: Any) -> dict[str, Any]:
    path = req["path"]
    if os.path.normpath(path) == "/":
        raise FsFailure("invalid", path, "refusing to remove /")
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        if req.get("recursive"):
            shutil.rmtree(path)
        else:
            os.rmdir(path)
    else:
        os.unlink(path)
    return {"removed": True}


def op_mv(req: dict[str, Any], out: Any) -> dict[str, Any]:
    src, dst = req["src"], req["dst"]
    os.lstat(src)
    if os.path.lexists(dst) and not req.get("overwrite"):
        raise FsFailure("already_exists", dst, f"{dst} exists; pass overwrite: true")
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # an image directory on overlayfs: copy instead
            raise
        shutil.move(src, dst)
    return {"moved": True}


def op_chmod(req: dict[str, Any], out: Any) -> dict[str, Any]:
    path, mode = req["path"], _octal(req["mode"])
    uid, gid = req.get("uid"), req.get("gid")
    targets = _walk(path, True) if req.get("recursive") else iter([path])
    updated = 0
    for target in targets:
        if not os.path.islink(target):
            os.chmod(target, mode)
        if uid is not None or gid is not None:
            os.lchown(target, -1 if uid is None else uid, -1 if gid is None else gid)
        updated += 1
    return {"updated": updated}


def _walk(root: str, recursive: bool) -> Iterator[str]:
    """``root`` and (when a directory) what is under it, never following symlinks."""
    os.lstat(root)
    yield root
    if not os.path.isdir(root) or os.path.islink(root):
        return
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames) + sorted(filenames):
            yield os.path.join(dirpath, name)
        if not recursive:
            dirnames.clear()


def _matches_globs(path: str, include: list[str], exclude: list[str]) -> bool:
    name = os.path.basename(path)
    def hit(globs: list[str]) -> bool:
        return any(fnmatch.fnmatch(name, g) or fnmatch.fnmatch(path, g) for g in globs)
    return (not include or hit(include)) and not hit(exclude)


def _files(req: dict[str, Any]) -> Iterator[str]:
    for path in _walk(req["path"], bool(req.get("recursive", True))):
        if os.path.isfile(path) and not os.path.islink(path) and _matches_globs(
                path, req.get("include_glob") or [], req.get("exclude_glob") or []):
            yield path


def _compile(pattern: str, ignore_case: bool, regex: bool = True) -> re.Pattern[str]:
    try:
        return re.compile(pattern if regex else re.escape(pattern),
                          re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise FsFailure("regex", "", f"invalid regex {pattern!r}: {exc}") from exc


def _text(path: str) -> str | None:
    with open(path, "rb") as f:
        data = f.read()
    if b"\0" in data[:_BINARY_SNIFF]:
        return None
    return data.decode("utf-8", errors="replace")


def op_grep(req: dict[str, Any], out: Any) -> dict[str, Any]:
    pattern = _compile(req["pattern"], bool(req.get("ignore_case")))
    limit, width = int(req.get("max_matches", 10000)), int(req.get("max_line_bytes", 4096))
    matches: list[dict[str, Any]] = []
    for path in _files(req):
        text = _text(path)
        for number, line in enumerate(() if text is None else text.splitlines(), 1):
            if pattern.search(line):
                if len(matches) >= limit:
                    return {"matches": matches, "truncated": True}
                content = line if len(line.encode()) <= width else \
                    line.encode()[:width].decode("utf-8", errors="ignore") + "…"
                matches.append({"path": path, "line": number, "content": content})
    return {"matches": matches, "truncated": False}


def op_sed(req: dict[str, Any], out: Any) -> dict[str, Any]:
    files, root = req.get("files") or [], req.get("path")
    if bool(files) == (root is not None):
        raise FsFailure("invalid", root or "", "pass exactly one of `files` or `path`")
    pattern = _compile(req["pattern"], bool(req.get("ignore_case")), bool(req.get("regex", True)))
    replacement = req["replacement"] if req.get("regex", True) else \
        req["replacement"].replace("\\", "\\\\")
    results, total = [], 0
    for path in files or list(_files(req)):
        try:
            text = _text(path)
            if text is None:
                raise FsFailure("wrong_type", path, "binary file")
            new, count = pattern.subn(replacement, text, count=1 if req.get("first_only") else 0)
            if count:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(new)
            results.append({"path": path, "replacements": count, "success": True})
            total += count
        except (OSError, FsFailure, re.error) as exc:
            message = exc.message if isinstance(exc, FsFailure) else str(exc)
            results.append({"path": path, "replacements": 0, "success": False, "error": message})
    return {"results": results, "total_replacements": total}


_OPS = {"write": op_write, "ls": op_ls, "stat": op_stat, "mkdir": op_mkdir, "rm": op_rm,
        "mv": op_mv, "chmod": op_chmod, "grep": op_grep, "sed": op_sed}


def run(request: dict[str, Any]) -> int:
    """Do one operation, answer on stdout (fd 1); the exit code is 0 either way (1 when the
    answer itself cannot be written)."""
    out = os.fdopen(1, "wb", closefd=False)
    op, path = str(request.get("op")), str(request.get("path", request.get("src", "")))
    try:
        try:
            if op == "read":
                op_read(request, out)
                out.flush()
                return 0
            handler = _OPS.get(op)
            if handler is None:
                raise FsFailure("invalid", path, f"unknown fs operation {op!r}")
            answer: dict[str, Any] = {"ok": handler(request, out)}
        except OSError as exc:
            raise _fail_os(exc.filename or path, exc) from exc
    except FsFailure as exc:
        answer = {"error": {"kind": exc.kind, "path": exc.path, "message": exc.message}}
    try:
        out.write(json.dumps(answer).encode() + b"\n")
        out.flush()
    except OSError:
        return 1
    return 0
