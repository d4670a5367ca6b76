"""No host root in a sandbox: ids shifted into a subordinate range, files shown idmapped.

A root launcher without ``id_shift`` would map the sandbox's 0..65535 onto the host's
0..65535: a sandbox process that escaped its mount namespace, or reached anything by uid (a
socket's peer credentials, a file on a shared mount), would be host root. With ``id_shift`` the
sandbox's ids run as ``uid_base..uid_base+65535`` on the host, like docker's ``userns-remap``
and podman's ``--userns=auto``.

The image cache and the sandbox's own state dir (overlay upper and work) keep their owners on
disk as the sandbox sees them (0..65535): the launcher, still host root in a private mount
namespace, binds them through idmapped mounts (``mount_setattr(MOUNT_ATTR_IDMAP)``, Linux
>= 5.12, as overlay layers >= 5.19) before it enters the user namespace. So the daemon's own
writes (the project copy, the marker) need no chown, an export reads sandbox owners, and a
cache is shared by sandboxes of any range.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import subprocess
import sys

import msgspec

from vmm_ffi import syscalls as sc
from vmm_ffi.errors import SetupFailed
from vmm_ffi.params import DirectoryRoot, IdShift, LaunchParams, OverlayRoot, RootSpec

ID_RANGE = 65536
STAGING_DIR = "idmapped"  # in the sandbox's state dir: mount points of the idmapped binds


def map_lines(shift: IdShift) -> tuple[str, str]:
    """(uid_map, gid_map) of a shifted sandbox."""
    return f"0 {shift.uid_base} {ID_RANGE}\n", f"0 {shift.gid_base} {ID_RANGE}\n"


def mapping_userns(shift: IdShift) -> int:
    """An fd of a user namespace with ``shift``'s maps (the idmapped mounts' mapping)."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only unshares and waits to be killed
        try:
            os.close(ready_r)
            os.close(hold_w)
            sc.unshare(sc.CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(hold_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(hold_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise SetupFailed("id map", "could not create a user namespace for the id mapping")
        uid_map, gid_map = map_lines(shift)
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write(uid_map)
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write(gid_map)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SetupFailed("id map", str(exc)) from exc
    finally:
        os.close(ready_r)
        os.close(hold_w)  # EOF: the child ends; its namespace lives on in our fd
        os.waitpid(pid, 0)


# mount_setattr(MOUNT_ATTR_IDMAP) answers these when the kernel or the file system cannot
# (EINVAL: a file system without FS_ALLOW_IDMAP, e.g. ramfs; ENOSYS: Linux < 5.12).
_REFUSALS = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM)
SHIFTED_PREFIX = ".shifted-"  # beside the cache entry: hidden from the image list
TEMP_PREFIX = ".tmp-"  # the image store sweeps stale ``.tmp-*`` dirs of its cache


class PresentedRoot(msgspec.Struct, frozen=True):
    """The root to mount (paths relative to the state dir) and how its owners are shown."""

    root: RootSpec
    fallback: str | None = None  # why shifted copies are used instead of idmapped mounts


def present_root(params: LaunchParams, shift: IdShift) -> PresentedRoot:
    """Bind the root's directories idmapped under the state dir; return the root to mount,
    its paths relative to the state dir (the shifted ids may not walk the dirs above it).

    Where the kernel or the file system refuses idmapped mounts, falls back (SPEC §8): a
    cached image gets a shifted copy beside it, made once per cache entry and id range
    (``shifted_copy``), and the sandbox's own state (overlay upper + work, or a directory root)
    is shifted in place (``shift_in_place``): what the sandbox writes then has host ids of the
    range on disk. Call as host root, in a private mount namespace, before entering the user
    namespace. Raises ``SetupFailed`` when even the fallback cannot be made.
    """
    staging = STAGING_DIR
    userns = mapping_userns(shift)
    refused: list[str] = []
    try:
        root = params.rootfs
        if isinstance(root, OverlayRoot):
            lowers = [_present(lower, os.path.join(staging, f"lower{i}"), userns, shift,
                               refused, copy=True) for i, lower in enumerate(root.lower)]
            # upper and work must stay on one mount: bind their common parent
            parent = os.path.dirname(root.upper)
            shown = _present(parent, os.path.join(staging, "state"), userns, shift, refused,
                             copy=False, only=[root.upper, root.work])
            presented: RootSpec = OverlayRoot(
                lower=lowers, upper=os.path.join(shown, os.path.relpath(root.upper, parent)),
                work=os.path.join(shown, os.path.relpath(root.work, parent)))
        else:
            assert isinstance(root, DirectoryRoot)
            presented = DirectoryRoot(path=_present(root.path, os.path.join(staging, "root"),
                                                    userns, shift, refused, copy=False))
    finally:
        os.close(userns)
    fallback = None if not refused else \
        f"shifted copies: idmapped mounts refused ({refused[0]})"
    return PresentedRoot(root=presented, fallback=fallback)


def _present(source: str, target: str, userns: int, shift: IdShift, refused: list[str], *,
             copy: bool, only: list[str] | None = None) -> str:
    """``source`` shown at ``target`` (relative to the state dir, our cwd) with the sandbox's
    owners: idmapped, else (the fallback) a shifted copy (``copy``) or ``source`` itself
    shifted in place (``only`` these of its subtrees)."""
    os.makedirs(target, exist_ok=True)
    try:
        if not refused:
            try:
                sc.idmapped_bind(source, target, userns)
                return target
            except OSError as exc:
                if exc.errno not in _REFUSALS:
                    raise
                refused.append(f"{exc.strerror} on {source}")
        if copy:
            source = shifted_copy(source, shift)
        else:
            for tree in only or [source]:
                shift_in_place(tree, shift)
        sc.mount(source, target, None, sc.MS_BIND | sc.MS_REC)
    except OSError as exc:
        raise SetupFailed("id map", f"{exc} (sandboxes with shifted ids need idmapped mounts "
                          "(Linux >= 5.19) or a file system where the launcher can chown a "
                          "copy of the image)") from exc
    return target


def shifted_copy(source: str, shift: IdShift) -> str:
    """A copy of the cached image ``source`` with every owner moved into ``shift``'s range:
    ``<cache>/.shifted-<uid>-<gid>-<inode>-<name>`` beside it, made once per cache entry
    (its inode: a refreshed entry is a new directory) and range. Built in a ``.tmp-`` dir and
    renamed into place under an flock, so a crash leaves nothing that looks complete and
    concurrent launchers make it once."""
    parent, name = os.path.split(os.path.abspath(source))
    key = f"{shift.uid_base}-{shift.gid_base}-{os.stat(source).st_ino}-{name}"
    final = os.path.join(parent, SHIFTED_PREFIX + key)
    if os.path.isdir(final):
        return final
    # The image store's sweep of ``.tmp-<slug>-<n>`` dirs skips those whose ``.<slug>.lock`` is
    # held: hold it while copying (it also lets a concurrent launcher wait, then reuse ours).
    lock = os.open(os.path.join(parent, f"{SHIFTED_PREFIX}{key}.lock"),
                   os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isdir(final):
            _make_shifted_copy(source, final, key, shift)
    finally:
        os.close(lock)
    return final


def _make_shifted_copy(source: str, final: str, key: str, shift: IdShift) -> None:
    temp = os.path.join(os.path.dirname(final), f"{TEMP_PREFIX}shifted-{key}-{os.getpid()}")
    if os.path.lexists(temp):
        remove_tree_here(temp)
    proc = subprocess.run(["cp", "-a", "--", source, temp], check=False, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        if os.path.lexists(temp):
            remove_tree_here(temp)
        raise OSError(f"cp -a {source}: {proc.stderr.strip() or proc.returncode}")
    shift_in_place(temp, shift)
    try:
        os.rename(temp, final)
    except OSError:
        remove_tree_here(temp)
        raise


def shift_in_place(tree: str, shift: IdShift) -> None:
    """Move owners below the range (0..65535, as the daemon and the image wrote them) into
    ``shift``'s range; owners already in it stay. Modes are restored after each chown (it
    clears set-user-ID and set-group-ID bits)."""
    def one(path: str) -> None:
        st = os.lstat(path)
        uid = st.st_uid + shift.uid_base if st.st_uid < ID_RANGE else st.st_uid
        gid = st.st_gid + shift.gid_base if st.st_gid < ID_RANGE else st.st_gid
        if (uid, gid) == (st.st_uid, st.st_gid):
            return
        os.lchown(path, uid, gid)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(path, stat.S_IMODE(st.st_mode))

    one(tree)
    for dirpath, dirnames, filenames in os.walk(tree):
        for entry in (*dirnames, *filenames):
            one(os.path.join(dirpath, entry))


def remove_tree_here(path: str) -> None:
    """rmtree that makes read-only directories writable on its way (never follows symlinks);
    ``daemon.trees.remove_tree`` runs it, and so does the user-namespace removal helper."""

    def writable(_func: object, failed: str, _exc: object) -> None:
        os.chmod(os.path.dirname(failed), 0o700)
        if os.path.isdir(failed) and not os.path.islink(failed):
            os.chmod(failed, 0o700)
            remove_tree_here(failed)
        else:
            os.unlink(failed)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=writable)
    else:
        shutil.rmtree(path, onerror=writable)
