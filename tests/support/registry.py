"""A real OCI registry for tests: Debian's ``docker-registry`` (CNCF distribution 2.8).

:class:`RegistryServer` writes a config (filesystem storage in a temp dir, delete enabled,
``127.0.0.1:<free port>``, optionally ``auth.htpasswd`` with a bcrypt entry made by
``htpasswd -Bbn``), runs ``docker-registry serve``, waits for ``GET /v2/``, and on stop kills and
reaps it. Its log (with the access log, so tests can count blob downloads) is kept in the temp
dir and shown when startup fails.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

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


class FaultProxy:
    """A small aiohttp proxy in front of a real registry that injects faults on demand.

    ``fail(path_part, status, times)`` answers matching requests with ``status``;
    ``cut(path_part, times)`` sends half the body and then drops the connection;
    ``seen(path_part)`` counts the requests that reached the proxy.
    """

    def __init__(self, upstream: RegistryServer) -> None:
        self.upstream = upstream
        self.port = 0
        self._faults: list[tuple[str, int | None, int]] = []
        self._log: list[str] = []
        self._runner: object = None
        self._client: object = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def fail(self, path_part: str, status: int, times: int = 1) -> None:
        self._faults.append((path_part, status, times))

    def cut(self, path_part: str, times: int = 1) -> None:
        self._faults.append((path_part, None, times))

    def seen(self, path_part: str) -> int:
        return sum(1 for path in self._log if path_part in path)

    def _take_fault(self, path: str) -> tuple[bool, int | None]:
        for i, (part, status, times) in enumerate(self._faults):
            if part in path and times > 0:
                self._faults[i] = (part, status, times - 1)
                return True, status
        return False, None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self._log.append(request.path_qs)
        faulty, status = self._take_fault(request.path_qs)
        if faulty and status is not None:
            return web.Response(status=status, text="injected fault")
        assert isinstance(self._client, aiohttp.ClientSession)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self._client.request(request.method, f"{self.upstream.url}{request.path_qs}",
                                        headers=headers, data=await request.read(),
                                        allow_redirects=False) as upstream:
            body = await upstream.read()
            passed = {k: v for k, v in upstream.headers.items()
                      if k.lower() not in ("content-length", "transfer-encoding", "connection")}
            if not faulty:
                return web.Response(status=upstream.status, body=body, headers=passed)
            resp = web.StreamResponse(status=upstream.status, headers=passed)
            resp.content_length = len(body)
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp

    async def start(self) -> FaultProxy:
        self._client = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if isinstance(self._runner, web.AppRunner):
            await self._runner.cleanup()
        if isinstance(self._client, aiohttp.ClientSession):
            await self._client.close()
