"""``iii daemon run``: builds every component explicitly and runs them (STYLE §1, §6).

Construction order (closed in reverse by one ``AsyncExitStack``): listener (inherited from systemd
or bound by us) → worker service (:func:`build_service`) → dispatcher → socket server.
Signals only set an event; a second SIGINT forces exit; SIGUSR1 logs every task's stack.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from client.protocol.constants import PROTOCOL_VERSION
from client.protocol.messages import (
    BackendAvailability,
    DaemonInfoResult,
    EngineInfo,
    IsolationInfo,
)
from daemon.api.listener import Listener, adopt_listener, bind_listener
from daemon.api.rpc import DaemonControl, Dispatcher
from daemon.api.server import RpcServer, ServerLimits
from daemon.api.services import Services
from daemon.config.settings import DaemonSettings, load_settings
from daemon.errors import DaemonError, ListenerError, SettingsError
from vmm_ffi.cgroups.limits import enter_daemon_leaf

if TYPE_CHECKING:  # imported where used: `iii daemon run` must start fast
    from daemon.background import BackgroundTasks
    from daemon.config.store import ConfigStore
    from daemon.engine.roster import EngineRoster
    from daemon.engine.session import EngineSession
    from daemon.ephemeral import SandboxService
    from daemon.events import EventBus
    from daemon.images import ImageStore
    from daemon.workers.autopilot import Autopilot
    from daemon.workers.commands.lifecycle import WorkerLifecycle
    from daemon.workers.launching.launch import WorkerLauncher
    from daemon.workers.supervision.supervisor import Supervisor

__all__ = ["ServiceFactory", "build_service", "daemon_version", "main", "serve_daemon"]

log = logging.getLogger("iii.daemon")

SHUTDOWN_CONNECTIONS_TIMEOUT_S = 5.0  # step 3 of the shutdown: in-flight requests finish

ServiceFactory = Callable[[DaemonSettings, AsyncExitStack], Awaitable[Services]]


async def build_service(settings: DaemonSettings, stack: AsyncExitStack) -> Services:
    """THE seam where every component is built and wired, in dependency order.

    Register anything that must be closed on ``stack``; the worker service's ``aclose`` is
    called by :func:`serve_daemon` before the listener is closed.
    """
    from daemon.api.engine_bus import EngineApi
    from daemon.api.methods import EventMethods, ImageMethods
    from daemon.background import BackgroundTasks
    from daemon.engine.session import EngineSession
    from daemon.ephemeral import SandboxEngineApi
    from daemon.ephemeral.methods import sandbox_calls
    from daemon.events import EventBus
    from daemon.workers.autopilot import Autopilot
    from daemon.workers.commands.lifecycle import WorkerLifecycle

    store = _load_store(settings)
    images = _image_store(settings)
    events = EventBus()
    tasks = await stack.enter_async_context(BackgroundTasks())
    launcher, supervisor = _launcher_and_supervisor(settings, store, images, events, tasks)
    session = EngineSession(settings.engine_url, version=daemon_version())
    roster = _engine_roster(session, events, store, supervisor)
    workers = WorkerLifecycle(settings, store, images, launcher, supervisor, events, roster)
    sandboxes = await build_sandbox_service(settings, images, stack, tasks)
    services = Services(workers=workers, images=ImageMethods(images),
                        events=EventMethods(events), engine_reachable=workers.engine_reachable,
                        sandbox_calls=sandbox_calls(sandboxes))
    api = EngineApi(services, events, engine_control=settings.engine_control)
    session.serve({**api.functions(), **SandboxEngineApi(sandboxes).functions()}, api)
    autopilot = Autopilot(settings, store, supervisor, events, session, roster, tasks,
                          layout=launcher.layout, api=api)
    session.listen(on_up=autopilot.engine_up, on_down=autopilot.engine_down)
    store.listen(autopilot.config_changed)
    adopted = await autopilot.reattach()
    log.info("reattached %d running worker(s)", adopted)
    await asyncio.to_thread(sweep_network, settings)
    _start_background(tasks, autopilot, workers, store, supervisor, events, launcher)
    return services


def _load_store(settings: DaemonSettings) -> ConfigStore:
    """The worker registry; a broken config.yaml is logged and the daemon still starts."""
    from daemon.config.store import ConfigStore

    store = ConfigStore(settings.config_path, settings.home)
    try:
        store.load()
    except DaemonError as exc:  # reported; never overwritten (writes refuse until it is fixed)
        log.error("%s", exc)
    return store


def _image_store(settings: DaemonSettings) -> ImageStore:
    from daemon.images import ImageStore, RegistrySettings
    from daemon.images.settings import docker_config_path

    return ImageStore(settings.home, RegistrySettings(
        insecure_registries=frozenset(settings.insecure_registries),
        mirror=settings.registry_mirror, docker_config=docker_config_path(os.environ)))


def _launcher_and_supervisor(settings: DaemonSettings, store: ConfigStore, images: ImageStore,
                             events: EventBus, tasks: BackgroundTasks,
                             ) -> tuple[WorkerLauncher, Supervisor]:
    from daemon.sandboxes import Provisioner
    from daemon.workers.launching.launch import WorkerLauncher
    from daemon.workers.supervision.state import Backoff
    from daemon.workers.supervision.supervisor import Supervisor

    launcher = WorkerLauncher(settings, store, images, Provisioner(settings.home))
    supervisor = Supervisor(launcher.launch, events, tasks, home=settings.home,
                            stop_timeout_s=settings.stop_timeout_s,
                            backoff=Backoff(settings.restart_backoff_s, settings.restart_backoff_max_s))
    return launcher, supervisor


def _engine_roster(session: EngineSession, events: EventBus, store: ConfigStore,
                   supervisor: Supervisor) -> EngineRoster:
    from daemon.engine.roster import EngineRoster
    from daemon.workers.autopilot import expecting_registrations

    roster = EngineRoster(session, events, managed=lambda name: store.find(name) is not None,
                          busy=lambda: expecting_registrations(supervisor, roster))
    return roster


def _start_background(tasks: BackgroundTasks, autopilot: Autopilot, workers: WorkerLifecycle,
                      store: ConfigStore, supervisor: Supervisor, events: EventBus,
                      launcher: WorkerLauncher) -> None:
    """The autopilot, hot reload of worker sources, and the preloading of boot specs."""
    from daemon.workers.hot_reload import HotReload

    tasks.create_task(autopilot.run(), name="autopilot")
    tasks.create_task(HotReload(workers, store, supervisor, events, tasks).run(),
                      name="hot-reload")
    tasks.create_task(launcher.preload_specs(), name="preload-specs")


async def build_sandbox_service(settings: DaemonSettings, images: ImageStore,
                                stack: AsyncExitStack, tasks: BackgroundTasks) -> SandboxService:
    """The ephemeral sandbox service (``sandbox::*``): sweeps what a previous daemon left,
    is closed (every sandbox stopped) with the daemon, and reaps idle ones in the background."""
    from daemon.ephemeral import SandboxBooter, SandboxService, maintain

    service = SandboxService(SandboxBooter(settings, images))
    swept = await service.booter.sweep()
    if swept:
        log.info("stopped %d sandbox(es) a previous daemon left running", swept)
    maintenance = tasks.create_task(maintain(service), name="sandbox-maintenance")

    async def close() -> None:
        # The maintenance loop first: a warm sandbox it boots while the pool is being emptied
        # would outlive the shutdown (and hold it up until that boot gives up).
        maintenance.cancel()
        await asyncio.gather(maintenance, return_exceptions=True)
        await service.aclose()

    stack.push_async_callback(close)
    return service


def sweep_network(settings: DaemonSettings) -> None:
    """After reattach: this home's bridge leases of launchers that are gone (a ``kill -9``),
    and with no sandbox left, its bridge and nftables table; never another home's."""
    if os.geteuid() != 0 or not (settings.home / "network").is_dir():
        return
    from daemon.workers.launching.boot_specs import bridge_params
    from vmm_ffi.network.bridge_leases import sweep

    try:
        if sweep(bridge_params(settings)):
            log.info("removed this daemon's idle bridge network (no sandbox uses it)")
    except OSError as exc:
        log.warning("cannot sweep this daemon's bridge network: %s", exc)


def daemon_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("iii-sandbox-workers")
    except PackageNotFoundError:
        return "0.0.0+unknown"


async def probe_engine(url: str) -> EngineInfo:
    """SPEC §10 reachability: a TCP connect to the engine's host:port within 200 ms."""
    from daemon.engine.address import engine_address, tcp_reachable

    return EngineInfo(url=url, reachable=await tcp_reachable(*engine_address(url)))


def isolation_info(settings: DaemonSettings) -> IsolationInfo:
    """Which isolation backends work here and which one ``auto`` picks (SPEC §8)."""
    from vmm_ffi.availability import check_libkrun, check_namespace

    backends = {}
    for name, check in (("libkrun", check_libkrun), ("namespace", check_namespace)):
        status = check()
        reason = status.reason
        if getattr(status, "hint", None):
            reason = f"{reason} ({status.hint})" if reason else status.hint
        backends[name] = BackendAvailability(available=status.available, reason=reason)
    default = settings.isolation
    if default == "auto":
        default = "libkrun" if backends["libkrun"].available else "namespace"
    from daemon.workers.commands.isolation import host_isolation

    return IsolationInfo(default=default, backends=backends, host=host_isolation(settings))


def open_listener(settings: DaemonSettings) -> Listener:
    """The systemd-activated socket when one was passed to us, else our own at socket_path."""
    from daemon.api.activation import inherited_listen_socket

    inherited = inherited_listen_socket()
    if inherited is not None:
        log.info("serving on the socket passed by systemd")
        return adopt_listener(inherited)
    return bind_listener(settings.socket_path)


def _sd_notify(state: str) -> None:
    from daemon.api import sdnotify

    sdnotify.notify(state)


def _dump_tasks() -> None:
    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(file=out)
    log.warning("SIGUSR1: %d tasks\n%s", len(asyncio.all_tasks()), out.getvalue())


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    interrupts = 0

    def on_sigint() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            log.warning("second SIGINT: exiting now")
            os._exit(130)
        log.info("SIGINT: shutting down (press Ctrl-C again to force)")
        stop.set()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)


async def serve_daemon(settings: DaemonSettings, *, keep_workers: bool = False,
                       service_factory: ServiceFactory = build_service,
                       stop: asyncio.Event | None = None,
                       limits: ServerLimits | None = None) -> None:
    """Run the daemon until ``stop`` is set (signal or ``daemon.shutdown``), then shut down."""
    stop = stop or asyncio.Event()
    stop_workers = not keep_workers

    def request_shutdown(stop_workers_requested: bool) -> None:
        nonlocal stop_workers
        stop_workers = stop_workers_requested and not keep_workers
        stop.set()

    async def info() -> DaemonInfoResult:
        return await _daemon_info(settings, services)

    _check_home_writable(settings)
    if sys.platform.startswith("linux") and os.environ.get("INVOCATION_ID"):
        # Only under systemd (which sets INVOCATION_ID): elsewhere our cgroup is a shell's.
        log.info("cgroup: %s", enter_daemon_leaf())
    async with AsyncExitStack() as stack:
        listener = open_listener(settings)
        stack.callback(listener.close)
        services = await service_factory(settings, stack)

        async def close_service() -> None:
            await services.workers.aclose(stop_workers=stop_workers)

        stack.push_async_callback(close_service)
        dispatcher = Dispatcher(services, DaemonControl(info=info,
                                                       request_shutdown=request_shutdown))
        server = RpcServer(dispatcher, limits)
        await _serve_until_stopped(server, listener, settings, stop, lambda: stop_workers)
    log.info("daemon stopped")


def _check_home_writable(settings: DaemonSettings) -> None:
    try:
        settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = settings.home / f".write-probe-{os.getpid()}"
        probe.touch()  # a read-only home fails here, in one line, not deep in a subsystem
        probe.unlink()
    except OSError as exc:
        raise SettingsError(f"III_HOME {settings.home}: cannot write: {exc.strerror}; set "
                            "III_HOME to a directory you can write") from exc


async def _daemon_info(settings: DaemonSettings, services: Services) -> DaemonInfoResult:
    """``daemon.info``: version, paths, engine reachability and isolation backends."""
    # Reachable = the daemon's engine session is open (SPEC §10); services without one
    # (tests' scripted services) are answered with a TCP probe.
    session_open = services.engine_reachable
    engine = EngineInfo(url=settings.engine_url, reachable=session_open()) \
        if session_open is not None else await probe_engine(settings.engine_url)
    isolation = await asyncio.to_thread(isolation_info, settings)
    return DaemonInfoResult(
        version=daemon_version(), protocol=PROTOCOL_VERSION, pid=os.getpid(),
        home=str(settings.home), config_path=str(settings.config_path),
        socket=str(settings.socket_path), engine=engine, isolation=isolation)


async def _serve_until_stopped(server: RpcServer, listener: Listener, settings: DaemonSettings,
                               stop: asyncio.Event, stop_workers: Callable[[], bool]) -> None:
    """Serve; tell systemd READY, wait for ``stop``, tell it STOPPING, let requests finish."""
    async with asyncio.TaskGroup() as tg:
        tg.create_task(server.serve(listener.sock))
        await server.accepting.wait()
        log.info("iii daemon %s (pid %d) listening on %s", daemon_version(), os.getpid(),
                 settings.socket_path)
        _sd_notify("READY=1")
        await stop.wait()
        log.info("shutting down (%s workers)", "stopping" if stop_workers() else "keeping")
        _sd_notify("STOPPING=1")
        await server.shutdown(SHUTDOWN_CONNECTIONS_TIMEOUT_S)


def main(config: Path | None = None, keep_workers: bool = False,
         service_factory: ServiceFactory = build_service) -> int:
    """Entry point of ``python -m daemon run``: returns the process exit code."""
    import uvloop

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(config_path=config)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    async def run() -> None:
        stop = asyncio.Event()
        _install_signals(stop)
        await serve_daemon(settings, keep_workers=keep_workers, stop=stop,
                           service_factory=service_factory)

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run())
    except (ListenerError, DaemonError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
