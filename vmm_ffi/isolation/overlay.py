"""The sandbox's overlay root: the one set of mount options, and a probe that they work here.

The overlay is mounted inside the launcher's user namespace, where overlayfs may not use its
``trusted.overlay.*`` xattrs. Without ``userxattr`` it then cannot record whiteouts of
directories or opaque directories, so deleting or replacing anything the image shipped fails
with EIO, and a rename into a merged directory with EXDEV: dpkg, pip and npm all do that. With
``userxattr`` (Linux >= 5.11) overlayfs keeps those markers in ``user.overlay.*`` instead, and the
root behaves as the root of a rootless podman container does. What that leaves in the upper dir
(whiteouts, opaque markers) is described in ARCHITECTURE.md, "The sandbox's upper dir".

One semantic of the kernel remains, as in every rootless container: ``rename(2)`` of a directory
that comes from the image answers EXDEV (``redirect_dir`` needs trusted xattrs). ``mv`` and
package managers fall back to copy + delete, so nothing we run trips on it.

``python -m vmm_ffi.isolation.overlay probe DIR`` checks, in a fresh user + mount namespace,
that such a mount reads the image, writes, deletes an image directory tree and re-creates it
empty, and renames an image file; it prints ``ok`` or the failing step. The daemon runs it once
per host.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys

from vmm_ffi import syscalls as sc
from vmm_ffi.errors import LauncherError, SetupFailed
from vmm_ffi.isolation.userns import unshare_with_id_map
from vmm_ffi.params import OverlayRoot

USERXATTR_HINT = "overlayfs in a user namespace needs the userxattr option (Linux >= 5.11)"


def overlay_options(root: OverlayRoot) -> str:
    """The ``mount -o`` data for ``root`` (lower dirs top-most first)."""
    return (f"lowerdir={':'.join(root.lower)},upperdir={root.upper},workdir={root.work},"
            "userxattr")


def mount_overlay(root: OverlayRoot, target: str) -> None:
    """Mount ``root`` at ``target`` (we are root of our own user + mount namespace).

    Raises ``SetupFailed("mount overlay", ...)``; a kernel without ``userxattr`` is named.
    """
    for d in (root.upper, root.work):
        os.makedirs(d, exist_ok=True)
    try:
        sc.mount("overlay", target, "overlay", 0, overlay_options(root))
    except OSError as exc:
        detail = str(exc)
        if exc.errno == errno.EINVAL:
            detail += (f" ({USERXATTR_HINT}; `iii worker add --force` re-creates the sandbox "
                       "with a copied root)")
        raise SetupFailed("mount overlay", detail) from exc


def probe(base: str) -> str:
    """In a new user + mount namespace, exercise an overlay over ``base/lower``; "ok" or why.

    ``base`` holds empty ``lower upper work merged`` dirs; this fills ``lower`` first. Runs in
    a short-lived process of its own (it unshares its namespaces for good).
    """
    lower, upper, work, merged = (os.path.join(base, d)
                                  for d in ("lower", "upper", "work", "merged"))
    os.makedirs(os.path.join(lower, "tree", "sub"))
    for rel in ("keep", "tree/sub/file"):
        with open(os.path.join(lower, rel), "w") as f:
            f.write("lower")
    step = "enter a user namespace"
    try:
        sc.load()
        unshare_with_id_map(sc.CLONE_NEWUSER | sc.CLONE_NEWNS)
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        step = "mount"
        mount_overlay(OverlayRoot(lower=[lower], upper=upper, work=work), merged)
        step = "read through it"
        with open(os.path.join(merged, "keep")) as f:
            if f.read() != "lower":
                return "reading through the overlay gave the wrong content"
        step = "write through it"
        with open(os.path.join(merged, "written"), "w") as f:
            f.write("upper")
        step = "delete a directory of the image"
        shutil.rmtree(os.path.join(merged, "tree"))
        step = "re-create it empty"
        os.mkdir(os.path.join(merged, "tree"))
        if os.listdir(os.path.join(merged, "tree")):
            return "a re-created directory shows the image's old entries (no opaque dirs)"
        step = "rename a file of the image"
        os.rename(os.path.join(merged, "keep"), os.path.join(merged, "kept"))
        sc.umount2(merged, sc.MNT_DETACH)
    except (OSError, LauncherError) as exc:
        return f"{step}: {exc}"
    return "ok"


def main(argv: list[str]) -> int:
    """``probe DIR``: print the probe's answer; exit 0 only when it is ``ok``."""
    if len(argv) != 2 or argv[0] != "probe":
        print("usage: python -m vmm_ffi.isolation.overlay probe DIR", file=sys.stderr)
        return 2
    answer = probe(argv[1])
    print(answer)
    return 0 if answer == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
