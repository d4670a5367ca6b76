from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from daemon.errors import Conflict, InvalidState, ScriptFailed
from daemon.sandboxes.boot import BootPhase, BootSpec, boot_sandbox, prepare
from daemon.sandboxes.layout import RootMode, SandboxLayout
from daemon.sandboxes.provision import Provisioner
from daemon.sandboxes.task import SandboxTask
from tests.support.wait import wait_until

SETUP = "echo setup-ran >> /var/setup-count"
INSTALL = "echo installing; cat requirements.txt > /workspace/installed.txt"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    p = tmp_path / "proj"
    p.mkdir()
    (p / "requirements.txt").write_text("iii-sdk\n")
    (p / "worker.py").write_text("print('hi')\n")
    return p


def spec(image: Path, project: Path | None, **kw: object) -> BootSpec:
    args: dict[str, object] = {"name": "calc", "image_rootfs": str(image),
                                   "project": None if project is None else str(project),
                                   "setup": SETUP, "install": INSTALL, "cpus": 1, "memory_mib": 256,
                                   "start": "echo started; exit 0"}
    args.update(kw)
    return BootSpec(**args)  # type: ignore[arg-type]


async def test_first_start_runs_setup_then_install_and_writes_marker(
        layout: SandboxLayout, busybox_image: Path, provisioner: Provisioner,
        project: Path) -> None:
    phases: list[tuple[BootPhase, str]] = []
    got = await prepare(layout, spec(busybox_image, project), provisioner,
                        lambda ph, msg: phases.append((ph, msg)))
    assert (got.ran_setup, got.ran_install, got.reason) == (True, True, "first start")
    assert layout.marker.is_file()
    assert (layout.upper / "var/setup-count").read_text() == "setup-ran\n"
    assert (layout.workspace / "installed.txt").read_text() == "iii-sdk\n"
    log = layout.worker_log.read_text()
    assert log.index("running setup") < log.index("running install") < log.index("installing\n")
    assert (BootPhase.INSTALL, "running install (first start)") in phases
    # the image was not copied: the upper layer only holds what we and the scripts wrote
    assert not (layout.upper / "bin").exists()


async def test_later_start_skips_setup_and_install_while_fingerprint_matches(
        layout: SandboxLayout, busybox_image: Path, provisioner: Provisioner,
        project: Path) -> None:
    await prepare(layout, spec(busybox_image, project), provisioner)
    (project / "worker.py").write_text("print('edited')\n")  # source edits do not reinstall
    got = await prepare(layout, spec(busybox_image, project), provisioner)
    assert (got.ran_setup, got.ran_install, got.reason) == (False, False, None)
    assert got.sync is not None and got.sync.copied == 1
    assert (layout.upper / "var/setup-count").read_text() == "setup-ran\n"


async def test_changed_dependency_file_reruns_install_only_and_says_why(
        layout: SandboxLayout, busybox_image: Path, provisioner: Provisioner,
        project: Path) -> None:
    await prepare(layout, spec(busybox_image, project), provisioner)
    (project / "requirements.txt").write_text("iii-sdk\nrequests\n")
    got = await prepare(layout, spec(busybox_image, project), provisioner)
    assert (got.ran_setup, got.ran_install) == (False, True)
    assert got.reason == "requirements.txt changed"
    assert (layout.workspace / "installed.txt").read_text() == "iii-sdk\nrequests\n"
    assert (layout.upper / "var/setup-count").read_text() == "setup-ran\n"


async def test_failing_install_raises_with_code_and_tail_and_no_marker(
        layout: SandboxLayout, busybox_image: Path, provisioner: Provisioner,
        project: Path) -> None:
    bad = "for i in $(seq 1 30); do echo line $i; done; exit 3"
    with pytest.raises(ScriptFailed) as err:
        await prepare(layout, spec(busybox_image, project, install=bad), provisioner)
    assert (err.value.script, err.value.exit_code) == ("install", 3)
    assert err.value.output_tail == [f"line {i}" for i in range(11, 31)]
    assert not layout.marker.exists()
    assert "line 30" in layout.worker_log.read_text()
    # the next prepare retries install (setup too: it is still the first successful start)
    got = await prepare(layout, spec(busybox_image, project), provisioner)
    assert got.ran_install and got.reason == "first start"
    assert layout.marker.is_file()


async def test_sandbox_env_and_trust_files_inside(
        layout: SandboxLayout, busybox_image: Path, provisioner: Provisioner, project: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://host-only/simple")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/etc/host-pip.conf")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\ntest\n")
    install = ("env | sort > /workspace/env.txt; cat /etc/ssl/certs/ca-certificates.crt "
               "/etc/iii/ca.pem > /workspace/ca.txt; cat /etc/resolv.conf > /workspace/rc.txt")
    await prepare(layout, spec(busybox_image, project, install=install, ca_bundle=str(pem),
                               manifest_env={"GREETING": "hi", "III_URL": "ws://evil"},
                               config_env={"GREETING": "config wins"}), provisioner)
    env = dict(line.split("=", 1) for line in
               (layout.workspace / "env.txt").read_text().splitlines())
    assert env["III_URL"] == env["III_ENGINE_URL"] == "ws://127.0.0.1:49134"
    assert env["III_WORKER_NAME"] == "calc" and env["III_ISOLATION"] == "namespace"
    assert env["GREETING"] == "config wins"
    assert env["HTTPS_PROXY"] == "http://proxy.example:3128"
    assert env["SSL_CERT_FILE"] == env["PIP_CERT"] == "/etc/ssl/certs/ca-certificates.crt"
    assert not any(k.startswith("PIP_") and k != "PIP_CERT" for k in env)
    assert (layout.workspace / "ca.txt").read_text() == pem.read_text() * 2
    assert (layout.workspace / "rc.txt").read_text() == Path("/etc/resolv.conf").read_text()


async def test_boot_starts_the_worker_and_refuses_prepare_while_running(
        layout: SandboxLayout, busybox_image: Path, provisioner: Provisioner,
        project: Path) -> None:
    start = "echo started in $(pwd); cat worker.py; exec sleep 1000"
    task, prepared = await boot_sandbox(layout, spec(busybox_image, project, start=start), provisioner)
    try:
        assert prepared.ran_install
        with pytest.raises(Conflict, match="running"):
            await prepare(layout, spec(busybox_image, project), provisioner)
        again = SandboxTask.reattach(layout)
        assert again is not None and again.pid == task.pid
        again.close()
        wait_until(lambda: "print('hi')" in layout.worker_log.read_text(), 10, "worker output")
    finally:
        status = await task.stop(5)
    assert status.exit_code == 143
    log = layout.worker_log.read_text()
    assert "started in /workspace" in log and "print('hi')" in log


async def test_copy_mode_when_overlay_is_unavailable(
        iii_home: Path, busybox_image: Path, project: Path) -> None:
    lay = SandboxLayout(iii_home, "copied")
    prov = Provisioner(iii_home, force=RootMode.COPY)
    got = await prepare(lay, spec(busybox_image, project, name="copied"), prov)
    assert lay.mode() is RootMode.COPY and got.ran_install
    assert (lay.rootfs / "bin/busybox").is_file()
    assert (lay.rootfs / "var/.iii-prepared").is_file()
    assert (lay.rootfs / "workspace/installed.txt").read_text() == "iii-sdk\n"
    assert not lay.upper.exists()


async def test_container_worker_without_project(
        layout: SandboxLayout, busybox_image: Path, provisioner: Provisioner) -> None:
    got = await prepare(layout, spec(busybox_image, None, setup="", install=""), provisioner)
    assert got.sync is None and not got.ran_install and layout.marker.is_file()


async def test_two_concurrent_boots_second_refused(
        layout: SandboxLayout, busybox_image: Path, provisioner: Provisioner,
        project: Path) -> None:
    s = spec(busybox_image, project, start="exec sleep 1000")
    results = await asyncio.gather(boot_sandbox(layout, s, provisioner),
                                   boot_sandbox(layout, s, provisioner),
                                   return_exceptions=True)
    conflicts = [r for r in results if isinstance(r, Conflict)]
    booted = [r for r in results if isinstance(r, tuple)]
    assert len(conflicts) == 1 and len(booted) == 1, results
    task, _ = booted[0]
    with pytest.raises(InvalidState, match="running"):
        layout.remove()
    await task.stop(5)
    await task.delete()
    assert layout.remove() > 0 and not layout.dir.exists()


async def test_install_past_its_timeout_is_stopped_and_fails(
        layout: SandboxLayout, busybox_image: Path, provisioner: Provisioner,
        project: Path) -> None:
    slow = "echo working; sleep 9393"
    with pytest.raises(ScriptFailed) as err:
        await prepare(layout, spec(busybox_image, project, install=slow, setup="",
                                   script_timeout_s=0.5), provisioner)
    assert err.value.exit_code == 124
    assert err.value.output_tail[-1] == "install timed out after 0.5s"
    assert not layout.marker.exists() and not layout.pid_file.exists()
    assert SandboxTask.reattach(layout) is None
