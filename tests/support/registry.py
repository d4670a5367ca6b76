"""A real OCI registry for tests: Debian's ``docker-registry`` (CNCF distribution 2.8).

:class:`RegistryServer` writes a config (filesystem storage in a temp dir, delete enabled,
``127.0.0.1:<free port>``, optionally ``auth.htpasswd`` with a bcrypt entry made by
``htpasswd -Bbn``), runs ``docker-registry serve``, waits for ``GET /v2/``, and on stop kills and
reaps it. Its log (with the access log, so tests can count blob downloads) is kept in the temp
dir and shown when startup fails.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import aiohttp
from aiohttp import web

from tests.support.images import RegistryAccess
from tests.support.wait import wait_until

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RegistryServer:
    """One ``docker-registry serve`` process; ``with RegistryServer() as reg: reg.access``."""

    def __init__(self, *, username: str | None = None, password: str | None = None) -> None:
        self.username, self.password = username, password
        self.dir = Path(tempfile.mkdtemp(prefix="iii-registry-"))
        self.storage = self.dir / "storage"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def access(self) -> RegistryAccess:
        return RegistryAccess(self.url, self.username, self.password)

    @property
    def log(self) -> str:
        path = self.dir / "registry.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def requests(self, method: str, path_part: str) -> int:
        """How many ``method`` requests whose path contains ``path_part`` the access log holds."""
        return sum(1 for line in self.log.splitlines()
                   if f'"{method} /v2/' in line and path_part in line)

    def _config(self) -> str:
        auth = ""
        if self.username is not None:
            entry = subprocess.run(["htpasswd", "-Bbn", self.username, self.password or ""],
                                   check=True, capture_output=True, text=True).stdout.strip()
            (self.dir / "htpasswd").write_text(entry + "\n")
            auth = (f"auth:\n  htpasswd:\n    realm: iii-test\n"
                    f"    path: {self.dir / 'htpasswd'}\n")
        return (
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n"
            f"{auth}"
        )

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {self._proc.returncode}:\n{self.log}")
        try:
            with urllib.request.urlopen(f"{self.url}/v2/", timeout=2) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError as exc:
            return self.username is not None and exc.code == 401
        except OSError:
            return False

    def start(self) -> RegistryServer:
        for _attempt in range(3):  # the free port can be taken between probe and bind
            self.port = free_port()
            (self.dir / "config.yml").write_text(self._config())
            with (self.dir / "registry.log").open("wb") as log:
                self._proc = subprocess.Popen(
                    ["docker-registry", "serve", str(self.dir / "config.yml")],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                wait_until(self._ready, START_TIMEOUT_S, f"docker-registry on {self.host}")
                return self
            except RuntimeError:
                if "address already in use" not in self.log:
                    raise
        raise RuntimeError(f"docker-registry could not bind a port:\n{self.log}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(STOP_TIMEOUT_S)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


PROXY_START_TIMEOUT_S = 10.0
PROXY_STOP_TIMEOUT_S = 10.0
HOLD_TIMEOUT_S = 120.0  # a held response gives up by itself if the test never releases it


@dataclass
class _Fault:
    path_part: str
    kind: str  # "fail": answer `status`; "cut": part of the body, then drop; "hold": part, stall
    times: int
    fraction: float = 0.5
    status: int = 0


class FaultProxy:
    """A small aiohttp proxy in front of a real registry that injects faults on demand. It runs
    on its own event loop in a thread, so sync tests, async tests and other processes (a daemon)
    can all pull through it.

    ``fail(part, status, times)`` answers matching requests with ``status``;
    ``cut(part, times)`` sends ``fraction`` of a matching GET's body, then drops the connection;
    ``hold(part)`` sends ``fraction`` and stalls (``holding`` is set) until :meth:`release`;
    ``heal()`` forgets pending faults; ``seen(part)`` counts requests that reached the proxy;
    ``faults_injected`` counts the faults served.
    """

    def __init__(self, upstream: RegistryServer) -> None:
        self.upstream = upstream
        self.port = 0
        self.holding = threading.Event()
        self.faults_injected = 0
        self.requests: list[str] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy",
                                        daemon=True)
        self._release: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- fault control (called from the test's thread) -------------------------------------------
    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def fail(self, path_part: str, status: int, times: int = 1) -> None:
        self._add(_Fault(path_part, "fail", times, status=status))

    def cut(self, path_part: str, times: int = 1, fraction: float = 0.5) -> None:
        self._add(_Fault(path_part, "cut", times, fraction))

    def hold(self, path_part: str, fraction: float = 0.5) -> None:
        self._add(_Fault(path_part, "hold", 1, fraction))

    def heal(self) -> None:
        """Forget pending faults and let any held response go."""
        with self._lock:
            self._faults.clear()
        self.release()

    def release(self) -> None:
        if self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)

    def seen(self, path_part: str) -> int:
        with self._lock:
            return sum(1 for p in self.requests if path_part in p)

    def _take(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            self.requests.append(f"{method} {path}")
            for fault in self._faults:
                if fault.path_part in path and fault.times > 0 \
                        and (fault.kind == "fail" or method == "GET"):
                    fault.times -= 1
                    self.faults_injected += 1
                    return fault
        return None

    # -- serving (on the proxy's loop) -------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._take(request.method, request.path_qs)
        if fault is not None and fault.kind == "fail":
            return web.Response(status=fault.status, text="injected fault")
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self._client.request(request.method, f"{self.upstream.url}{request.path_qs}",
                                        headers=headers, data=await request.read(),
                                        allow_redirects=False) as upstream:
            body = await upstream.read()
            passed = {k: v for k, v in upstream.headers.items()
                      if k.lower() not in ("content-length", "transfer-encoding", "connection")}
        if fault is None or upstream.status != 200:
            return web.Response(status=upstream.status, body=body, headers=passed)
        resp = web.StreamResponse(status=upstream.status, headers=passed)
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[: int(len(body) * fault.fraction)])
        if fault.kind == "hold":
            self.holding.set()
            assert self._release is not None
            try:
                await asyncio.wait_for(self._release.wait(), HOLD_TIMEOUT_S)
            except TimeoutError:
                pass
        if request.transport is not None:
            request.transport.abort()
        return resp

    async def _start(self) -> None:
        self._release = asyncio.Event()
        self._client = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _stop(self) -> None:
        assert self._release is not None
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    def _run(self, coro: Any, timeout: float) -> None:
        future: Future[None] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        future.result(timeout)

    def start(self) -> Self:
        self._thread.start()
        self._run(self._start(), PROXY_START_TIMEOUT_S)
        return self

    def stop(self) -> None:
        try:
            self._run(self._stop(), PROXY_STOP_TIMEOUT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(PROXY_STOP_TIMEOUT_S)
            self._loop.close()
