"""Worker lifecycle benchmarks (issue 19), printed, never asserted.

(a) stop latency while an install runs: a real namespace sandbox (busybox rootfs) whose install
    is ``exec sleep 1000``; the time from ``stop`` to its return (goal <= stop timeout + 0.5 s;
    the install is killed, not waited for), against stopping the same worker once it runs.
(b) 10 racing start/stop pairs on one worker (host launcher, shell loop), each pair's start and
    stop given together: wall time and launches, against one start + stop. The model expects
    0 launches (each start is superseded by its stop before the reconciler acts; before issue
    19 each pair launched and several answered "busy") and the worker stopped.
(c) engine up → 10 workers running (host launchers): time until all run, against one worker
    (goal <= 1 s).

Run: ``.venv/bin/python bench/lifecycle.py``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.background import BackgroundTasks
from daemon.events import EventBus
from daemon.sandboxes import BootSpec, Provisioner, SandboxLayout, boot_sandbox
from daemon.workers.supervision.desired import Why
from daemon.workers.supervision.runtime import BootSink, Launched
from daemon.workers.supervision.state import WorkerState
from daemon.workers.supervision.supervisor import Supervisor
from tests.support.daemon import launchers_of, start_sleeping_shell
from tests.support.rootfs import make_busybox_rootfs

STOP_TIMEOUT_S = 10.0
INSTALL_RUNNING_WAIT_S = 30.0


class SandboxLaunch:
    """The real boot of a namespace sandbox (prepare: provision, install; then start)."""

    def __init__(self, home: Path, rootfs: Path, install: str) -> None:
        self.home, self.rootfs, self.install = home, rootfs, install
        self.provisioner = Provisioner(home)
        self.installing = asyncio.Event()

    async def launch(self, name: str, progress: BootSink) -> Launched:
        spec = BootSpec(name=name, image_rootfs=str(self.rootfs), install=self.install,
                        start="trap 'exit 0' TERM; sleep 1000 & wait", workdir="/",
                        backend="namespace")

        def boot(phase: object, message: str) -> None:
            progress.boot(phase, message)  # type: ignore[arg-type]
            if "install" in message:
                self.installing.set()

        task, _ = await boot_sandbox(SandboxLayout(self.home, name), spec, self.provisioner,
                                     boot)
        return Launched(task=task, isolation="namespace")


class ShellLaunch:
    def __init__(self, home: Path) -> None:
        self.home, self.launches = home, 0

    async def launch(self, name: str, progress: BootSink) -> Launched:
        self.launches += 1
        return await start_sleeping_shell(self.home, name)


async def stop_during_install(base: Path, tasks: BackgroundTasks) -> tuple[float, float]:
    rootfs = make_busybox_rootfs(base / "rootfs")
    slow = SandboxLaunch(base / "slow", rootfs, "exec sleep 1000")
    sup = Supervisor(slow.launch, EventBus(), tasks, home=base / "slow",
                     stop_timeout_s=STOP_TIMEOUT_S)
    starting = asyncio.create_task(sup.start("w"))
    await asyncio.wait_for(slow.installing.wait(), INSTALL_RUNNING_WAIT_S)
    await asyncio.sleep(0.5)  # the install's sandbox is up and sleeping
    before = launchers_of(base / "slow", "w")
    began = time.monotonic()
    await sup.stop("w")
    during = time.monotonic() - began
    await starting
    after = launchers_of(base / "slow", "w")
    print(f"    install launchers before the stop: {before}, after: {after}")
    fast = SandboxLaunch(base / "fast", rootfs, "")
    sup2 = Supervisor(fast.launch, EventBus(), tasks, home=base / "fast",
                      stop_timeout_s=STOP_TIMEOUT_S)
    await sup2.start("w")
    began = time.monotonic()
    await sup2.stop("w")
    running = time.monotonic() - began
    return during, running


async def racing_pairs(base: Path, tasks: BackgroundTasks) -> tuple[float, float, int, str]:
    one = ShellLaunch(base / "one")
    sup = Supervisor(one.launch, EventBus(), tasks, home=base / "one")
    began = time.monotonic()
    await sup.start("w")
    await sup.stop("w")
    baseline = time.monotonic() - began
    many = ShellLaunch(base / "many")
    sup = Supervisor(many.launch, EventBus(), tasks, home=base / "many")
    began = time.monotonic()

    async def pair(i: int) -> None:
        await asyncio.sleep(0.01 * i)  # spread: some land mid-launch, some mid-stop
        await asyncio.gather(sup.start("w"), sup.stop("w"), return_exceptions=True)

    await asyncio.gather(*(pair(i) for i in range(10)))
    wall = time.monotonic() - began
    final = sup.runtime("w").state.value
    await sup.close_all(stop_workers=True)
    return wall, baseline, many.launches, final


async def engine_up(base: Path, tasks: BackgroundTasks, count: int) -> float:
    launch = ShellLaunch(base / f"up{count}")
    sup = Supervisor(launch.launch, EventBus(), tasks, home=base / f"up{count}")
    names = [f"w{i}" for i in range(count)]
    for name in names:
        sup.reconciler(name)
    began = time.monotonic()
    for name in names:
        sup.auto_start(name, Why.ENGINE)
    while not all(sup.runtime(n).state is WorkerState.RUNNING for n in names):
        await asyncio.sleep(0.005)
    took = time.monotonic() - began
    await sup.close_all(stop_workers=True)
    return took


async def run() -> None:
    with tempfile.TemporaryDirectory(prefix="iii-bench-lifecycle-") as tmp:
        base = Path(tmp)
        async with BackgroundTasks() as tasks:
            during, running = await stop_during_install(base, tasks)
            print(f"(a) stop during install: {during * 1000:.0f} ms (goal <= "
                  f"{(STOP_TIMEOUT_S + 0.5) * 1000:.0f} ms); stop of the running worker "
                  f"{running * 1000:.0f} ms; ratio {during / running:.2f}")
            wall, baseline, launches, final = await racing_pairs(base, tasks)
            print(f"(b) 10 racing start/stop pairs: {wall * 1000:.0f} ms, {launches} launches, "
                  f"ends {final}; one start+stop {baseline * 1000:.0f} ms; ratio "
                  f"{wall / baseline:.2f}")
            ups = [await engine_up(base / f"r{i}", tasks, 10) for i in range(3)]
            ones = [await engine_up(base / f"s{i}", tasks, 1) for i in range(3)]
            ten, one = statistics.median(ups), statistics.median(ones)
            print(f"(c) engine up -> 10 workers running: {ten * 1000:.0f} ms (median of 3; "
                  f"goal <= 1000 ms); 1 worker {one * 1000:.0f} ms; ratio {ten / one:.2f}")
            tasks.cancel_all()


def main() -> int:
    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
