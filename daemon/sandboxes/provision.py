"""Provisioning a sandbox root from a cached image rootfs — without copying the image.

Preferred: overlayfs with the cache dir as the shared read-only lower and ``upper/`` + ``work/``
in the sandbox dir. The daemon only creates the directories; the mount happens inside the
launcher's own user+mount namespace, so no host mount exists and no privilege is needed. Whether
that works here (kernel ≥ 5.11 for overlay in a user namespace, a filesystem overlay accepts as
upper) is probed once per ``Provisioner``. Where it does not: a reflink copy (copy-on-write, near
instant on btrfs/xfs/APFS), and as the last resort a full copy, which is logged.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import msgspec

from daemon.errors import Internal
from daemon.sandboxes.layout import RootMode, SandboxLayout
from daemon.trees import remove_tree
from vmm_ffi.params import DirectoryRoot, OverlayRoot

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 20.0
COPY_TIMEOUT_S = 1800.0
ROOT_MODE_FILE = "root-mode"

RootSpec = OverlayRoot | DirectoryRoot

class RootDecision(msgspec.Struct, frozen=True, kw_only=True):
    """The provisioning mode chosen for this host, and why (shown when it is not overlay)."""

    mode: RootMode
    reason: str


def probe_overlay(scratch_parent: Path) -> tuple[bool, str]:
    """Whether a sandbox overlay (``vmm_ffi.isolation.overlay``) works here, deletes of image dirs
    included; (works, reason). Runs the probe in a child interpreter: it unshares for good."""
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".probe-", dir=scratch_parent) as tmp:
        for d in ("lower", "upper", "work", "merged"):
            (Path(tmp) / d).mkdir()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "vmm_ffi.isolation.overlay", "probe", tmp], check=False,
                capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                     "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"overlay probe could not run: {exc}"
        # Overlay's work dir holds a mode-000 "work" subdir: remove_tree copes with it.
        remove_tree(Path(tmp) / "work")
        if proc.returncode == 0:
            return True, "overlayfs works in a user namespace"
        err = (proc.stdout.strip().splitlines() or proc.stderr.strip().splitlines()
               or ["no output"])[-1]
        return False, f"overlayfs in a user namespace does not work here: {err}"


def probe_reflink(scratch_parent: Path) -> tuple[bool, str]:
    """Try ``cp --reflink=always`` of one file on the sandbox filesystem; (works, reason)."""
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".probe-", dir=scratch_parent) as tmp:
        src = Path(tmp) / "a"
        src.write_bytes(b"x" * 4096)
        try:
            proc = subprocess.run(_reflink_cmd(src, Path(tmp) / "b"), check=False,
                                  capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"reflink probe could not run: {exc}"
        if proc.returncode == 0:
            return True, "reflink copies work"
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"reflink copy failed: {err}"


def _reflink_cmd(src: Path, dst: Path) -> list[str]:
    if sys.platform == "darwin":
        return ["cp", "-c", "-R", "-p", str(src), str(dst)]  # clonefile(2)
    return ["cp", "-a", "--reflink=always", "--", str(src), str(dst)]


def _copy_cmd(src: Path, dst: Path) -> list[str]:
    if sys.platform == "darwin":
        return ["cp", "-R", "-p", str(src), str(dst)]
    return ["cp", "-a", "--", str(src), str(dst)]


class Provisioner:
    """Decides the root mode once (probing) and provisions sandboxes with it.

    ``force`` pins a mode (tests, or a host where the probe lies).
    """

    def __init__(self, home: Path, force: RootMode | None = None) -> None:
        self.home = Path(home)
        self._force = force
        self._decision: RootDecision | None = None
        self._lock = threading.Lock()

    def decision(self) -> RootDecision:
        """The mode for new sandboxes (probed on first use; blocking, call from a thread)."""
        with self._lock:
            if self._decision is None:
                self._decision = self._decide()
                if self._decision.mode is not RootMode.OVERLAY:
                    log.warning("sandbox roots use %s: %s", self._decision.mode.value,
                                self._decision.reason)
            return self._decision

    def _decide(self) -> RootDecision:
        if self._force is not None:
            return RootDecision(mode=self._force, reason=f"{self._force.value} forced")
        scratch = self.home / "managed"
        ok, why = (False, "overlayfs needs Linux") if sys.platform != "linux" \
            else probe_overlay(scratch)
        if ok:
            return RootDecision(mode=RootMode.OVERLAY, reason=why)
        ok2, why2 = probe_reflink(scratch)
        if ok2:
            return RootDecision(mode=RootMode.REFLINK, reason=f"{why}; {why2}")
        return RootDecision(mode=RootMode.COPY, reason=f"{why}; {why2}; full copy")

    def provision(self, layout: SandboxLayout, image_rootfs: Path) -> RootSpec:
        """Create (or reuse) the sandbox root for ``image_rootfs``; return the launcher's root.

        An already provisioned sandbox keeps its recorded mode. Blocking: call via
        ``asyncio.to_thread``. Raises ``Internal`` when a copy fails.
        """
        image_rootfs = Path(image_rootfs)
        layout.dir.mkdir(parents=True, exist_ok=True)
        layout.logs.mkdir(exist_ok=True)
        layout.merged.mkdir(exist_ok=True)
        mode = layout.mode()
        if mode is None:
            mode = self.decision().mode
            if mode is not RootMode.OVERLAY:
                _copy_rootfs(image_rootfs, layout.rootfs, mode)
            _write_atomic(layout.dir / ROOT_MODE_FILE, mode.value.encode())
        if mode is RootMode.OVERLAY:
            layout.upper.mkdir(exist_ok=True)
            layout.work.mkdir(exist_ok=True)
            return OverlayRoot(lower=[str(image_rootfs)], upper=str(layout.upper),
                               work=str(layout.work))
        return DirectoryRoot(path=str(layout.rootfs))


def _copy_rootfs(src: Path, dst: Path, mode: RootMode) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    if tmp.exists():
        remove_tree(tmp)
    if dst.exists():
        remove_tree(dst)
    cmd = _reflink_cmd(src, tmp) if mode is RootMode.REFLINK else _copy_cmd(src, tmp)
    if mode is RootMode.COPY:
        log.warning("provisioning %s by a full copy of %s (no overlay or reflink here)", dst, src)
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True,
                              timeout=COPY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Internal(f"copying the image rootfs failed: {exc}") from exc
    if proc.returncode != 0:
        if tmp.exists():
            remove_tree(tmp)
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise Internal(f"copying the image rootfs failed: {tail}")
    os.rename(tmp, dst)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
