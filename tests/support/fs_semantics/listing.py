"""Print one line per entry of a tree: path, type, mode, owner, and content, link target or
xattrs; what two roots must agree on (no times, inode numbers or link counts)."""

import hashlib
import os
import stat
import sys

SKIP = {"/proc", "/dev", "/sys", "/mnt"}  # the sandbox's own mounts and the test's binds
TIMESTAMPED = {"/var/log/dpkg.log"}  # same entries, other times: compared without content


def describe(path: str) -> str:
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    detail = ""
    if stat.S_ISREG(st.st_mode) and path not in TIMESTAMPED:
        with open(path, "rb") as f:
            detail = hashlib.sha256(f.read()).hexdigest()[:16]
    elif stat.S_ISLNK(st.st_mode):
        detail = "-> " + os.readlink(path)
    try:
        xattrs = sorted(os.listxattr(path, follow_symlinks=False))
    except OSError:
        xattrs = []
    values = ",".join(f"{x}={os.getxattr(path, x, follow_symlinks=False)!r}" for x in xattrs)
    return (f"F\t{path}\t{kind:o}\t{stat.S_IMODE(st.st_mode):o}\t{st.st_uid}:{st.st_gid}\t"
            f"{detail}\t{values}")


def main(root: str) -> None:
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if os.path.join(current, d) not in SKIP)
        for name in [*dirs, *sorted(files)]:
            print(describe(os.path.join(current, name)))


main(sys.argv[1])
