"""``sandbox::*`` on the engine bus, called by the real iii SDKs (Python's ``iii-sdk`` from the
venv, Node's ``iii-sdk`` from the npm registry) through the stand-in engine, against the real
daemon and real namespace sandboxes. Errors arrive as upstream's: the S-code in ``code`` and the
structured payload as JSON in ``message``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.e2e.test_sandboxes import sandbox_dirs, sandbox_yaml
from tests.support.daemon import DaemonProcess
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow

BOOT_MS = 120_000  # the first create pulls the image from the test registry


def start_daemon(daemon_factory, engine_factory, iii_home: Path, python_image: str,
                 busybox_image: str) -> tuple[DaemonProcess, str]:
    engine = engine_factory()
    (iii_home / "daemon.yaml").write_text(sandbox_yaml(python_image, busybox_image))
    daemon: DaemonProcess = daemon_factory(III_URL=engine.url)
    wait_until(lambda: daemon.json("daemon", "status")["engine"]["reachable"], 10, "engine up")
    return daemon, engine.url


def test_python_sdk_run_and_the_surgical_workflow(daemon_factory, engine_factory, sdk_caller,
                                                  iii_home: Path, python_image: str,
                                                  busybox_image: str) -> None:
    _, url = start_daemon(daemon_factory, engine_factory, iii_home, python_image, busybox_image)
    caller = sdk_caller(url)
    ran = caller.call("sandbox::run", {"image": "python", "code": "print(2+2)",
                                       "lang": "python"}, BOOT_MS)
    assert (ran["stdout"], ran["exit_code"], ran["success"]) == ("4\n", 0, True)
    assert "sandbox_id" not in ran

    sid = caller.call("sandbox::create", {"image": "python", "env": {"GREETING": "hi"}},
                      BOOT_MS)["sandbox_id"]
    caller.call("sandbox::fs::write", {"sandbox_id": sid, "path": "/app/main.py",
                                       "parents": True, "content":
                                       "import os\nopen('/app/out', 'w').write("
                                       "os.environ['GREETING'] + ' from ' + os.getcwd())\n"})
    out = caller.call("sandbox::exec", {"sandbox_id": sid, "cmd": "python3",
                                        "args": ["/app/main.py"], "workdir": "/app"})
    assert out["exit_code"] == 0, out
    assert caller.call("sandbox::fs::read", {"sandbox_id": sid, "path": "/app/out"})[
        "body"] == "hi from /app"
    assert caller.call("sandbox::stop", {"sandbox_id": sid, "wait": True})["stopped"] is True
    assert caller.call("sandbox::list", {})["sandboxes"] == []
    wait_until(lambda: sandbox_dirs(iii_home) == [], 10, "the run's sandbox to be deleted")

    error = caller.fails("sandbox::create", {"image": "cobol"})
    assert error["code"] == "S100"
    payload = json.loads(error["message"])
    assert payload["code"] == "S100" and payload["type"] == "config"
    assert "'python'" in payload["message"] and payload["retryable"] is False
    assert set(payload) == {"type", "code", "message", "docs_url", "retryable", "fix",
                            "fix_note"}
    bad = json.loads(caller.fails("sandbox::fs::write", {"sandbox_id": sid})["message"])
    assert bad["code"] == "S210" and "path" in bad["message"]


NODE_CALLER = textwrap.dedent("""\
    import { registerWorker } from 'iii-sdk'
    const iii = registerWorker(process.env.III_URL)
    const out = {}
    out.run = await iii.trigger({ function_id: 'sandbox::run', timeoutMs: 120000,
      payload: { image: 'shell', lang: 'shell', code: 'echo from-node; exit 3' } })
    const call = (function_id, payload) => iii.trigger({ function_id, payload, timeoutMs: 60000 })
    const { sandbox_id } = await call('sandbox::create', { image: 'python' })
    await call('sandbox::fs::write', { sandbox_id, path: '/app/main.py', parents: true,
      content: "open('/app/out.txt', 'w').write(str(6 * 7))" })
    out.exec = await call('sandbox::exec', { sandbox_id, argv: ['python3', '/app/main.py'] })
    out.read = await call('sandbox::fs::read', { sandbox_id, path: '/app/out.txt' })
    out.stop = await call('sandbox::stop', { sandbox_id, wait: true })
    try {
      await iii.trigger({ function_id: 'sandbox::exec', payload: { sandbox_id: 'nope', cmd: 'true' } })
    } catch (err) {
      // the SDK's InvocationError shows `${code}: ${message}`; the wire message is the JSON
      out.error = { code: err.code, message: err.message.slice(err.code.length + 2) }
    }
    console.log(JSON.stringify(out))
    process.exit(0)
""")


@pytest.fixture(scope="session")
def node_sdk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with Node's ``iii-sdk`` installed from the npm registry."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("node and npm are not installed on this host")
    where = tmp_path_factory.mktemp("node-sdk")
    (where / "package.json").write_text('{"type": "module", "private": true}')
    done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "iii-sdk@0.22"],
                          cwd=where, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot install iii-sdk from the npm registry: {done.stderr[-300:]}")
    return where


def test_node_sdk_run_workflow_and_error_payload(daemon_factory, engine_factory, node_sdk: Path,
                                        iii_home: Path, tmp_path: Path, python_image: str,
                                        busybox_image: str) -> None:
    _, url = start_daemon(daemon_factory, engine_factory, iii_home, python_image, busybox_image)
    script = node_sdk / "caller.mjs"
    script.write_text(NODE_CALLER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    env.update(III_URL=url, HOME=str(tmp_path))
    done = subprocess.run(["node", str(script)], cwd=node_sdk, env=env, capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert (out["run"]["stdout"], out["run"]["exit_code"], out["run"]["success"]) == \
        ("from-node\n", 3, False)
    assert (out["exec"]["exit_code"], out["read"]["body"]) == (0, "42")
    assert out["stop"]["stopped"] is True and sandbox_dirs(iii_home) == []
    assert out["error"]["code"] == "S002"
    assert json.loads(out["error"]["message"])["fix_note"].startswith("the sandbox is gone")
