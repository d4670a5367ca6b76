"""The ``iii`` / ``iii-worker`` commands as a user runs them: real processes, real socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.commands import resolve_target
from tests.support.inprocess_daemon import ThreadedDaemon
from tests.support.scripted_service import ScriptedService
from tests.support.wait import wait_until

BIN = Path(sys.executable).parent
TIMEOUT = 30


def iii(*args: str, env: dict[str, str], cwd: Path | None = None,
        program: str = "iii") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / program), *args], env=env, cwd=cwd, capture_output=True,
                          check=False,
                          text=True, timeout=TIMEOUT)


@pytest.fixture
def daemon(iii_home: Path) -> Iterator[ThreadedDaemon]:
    with ThreadedDaemon(iii_home, lambda: ScriptedService(worker_count=2)) as d:
        yield d


def test_worker_list_plain_table_when_not_a_tty(daemon: ThreadedDaemon) -> None:
    iii("worker", "add", "iii-http", env=daemon.env())
    out = iii("worker", "list", env=daemon.env())
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "STATUS", "PID", "ISOLATION", "ENGINE"]
    assert lines[1].split() == ["w0", "Local", "stopped", "-", "-", "-"]
    assert lines[3].split()[:2] == ["iii-http", "Config"]
    assert "\x1b[" not in out.stdout  # no colour codes into pipes


@pytest.mark.parametrize("argv, method", [
    (("worker", "list", "--json"), "worker.list"),
    (("worker", "inspect", "w1", "--json"), "worker.inspect"),
    (("image", "list", "--json"), "image.list"),
    (("daemon", "status", "--json"), "daemon.info"),
], ids=["list", "inspect", "image-list", "status"])
def test_json_prints_the_protocol_result_verbatim(daemon: ThreadedDaemon, argv: tuple[str, ...],
                                                  method: str) -> None:
    from client.rpc_client import RpcClient

    out = iii(*argv, env=daemon.env())
    assert out.returncode == 0, out.stderr
    params = {"name": "w1"} if method == "worker.inspect" else None
    with RpcClient(daemon.socket_path, autostart=False) as client:
        expected = client.call_raw(method, params)
    if method == "daemon.info":  # the engine probe may differ between calls; shape is the same
        assert json.loads(out.stdout).keys() == json.loads(expected).keys()
    else:
        assert out.stdout.encode() == expected + b"\n"


def test_add_resolves_relative_targets_and_prints_progress_lines(
        daemon: ThreadedDaemon, tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    out = iii("worker", "add", "./proj", env=daemon.env(), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "pull: layers (1/3 layers)" in out.stdout and "pull: layers (3/3 layers)" in out.stdout
    assert "added worker 'proj' (local)" in out.stdout
    assert "warning: resouces: did you mean resources?" in out.stderr
    inspect = json.loads(iii("worker", "inspect", "proj", "--json", env=daemon.env()).stdout)
    assert inspect["source"] == str(project)


def test_resolve_target() -> None:
    home = os.path.expanduser("~")
    assert resolve_target("~/p") == os.path.join(home, "p")
    assert resolve_target("./a/../b") == os.path.join(os.getcwd(), "b")
    assert resolve_target("/abs/x") == "/abs/x"
    assert resolve_target("ghcr.io/org/img:tag") == "ghcr.io/org/img:tag"
    assert resolve_target("iii-http") == "iii-http"


def test_errors_are_one_line_with_hint_and_exit_1(daemon: ThreadedDaemon) -> None:
    out = iii("worker", "start", "nosuch", env=daemon.env())
    assert out.returncode == 1
    assert out.stderr.splitlines() == ["error: worker 'nosuch' not found"]
    out = iii("worker", "add", "/x/fails", env=daemon.env())
    assert out.returncode == 1
    assert out.stderr.splitlines() == ["error: install script failed with exit code 3",
                                       "  | npm ERR! one", "  | npm ERR! two"]
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("argv", [
    ("worker", "add", ".", "--reset-config"),
    ("worker", "frobnicate"),
    ("worker", "stop"),
    ("worker", "logs", "w0", "--tail", "-3"),
], ids=["reset-without-force", "unknown-command", "missing-name", "negative-tail"])
def test_usage_errors_exit_2(daemon: ThreadedDaemon, argv: tuple[str, ...]) -> None:
    out = iii(*argv, env=daemon.env())
    assert out.returncode == 2, (out.stdout, out.stderr)


def test_iii_worker_start_stop_accept_upstream_flags_and_are_idempotent(
        daemon: ThreadedDaemon) -> None:
    flags = ["--port", "49134", "--address", "127.0.0.1", "--no-wait", "--config", "/c.yaml",
             "-y"]
    for _ in range(2):  # the second start of a running worker is a success too
        out = iii("start", *flags, "--", "w0", env=daemon.env(), program="iii-worker")
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[-1].startswith("worker 'w0': running (pid ")
    for _ in range(2):
        out = iii("stop", *flags, "--", "w0", env=daemon.env(), program="iii-worker")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "worker 'w0': stopped"


@pytest.mark.parametrize("program, argv", [
    ("iii-worker", ["start", "--port", "49134", "--", "iii-http"]),
    ("iii-worker", ["stop", "--no-wait", "iii-http"]),
    ("iii", ["worker", "start", "iii-http"]),
], ids=["iii-worker-start", "iii-worker-stop", "iii-start"])
def test_start_stop_of_a_config_worker_is_a_noop_with_a_note(
        daemon: ThreadedDaemon, program: str, argv: list[str]) -> None:
    # The upstream `iii` CLI spawns exactly these for builtin config workers (SPEC §12).
    iii("worker", "add", "iii-http", env=daemon.env())
    out = iii(*argv, env=daemon.env(), program=program)
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith("note: worker 'iii-http' is a config worker")
    assert "error" not in out.stderr


def test_restarting_a_config_worker_is_a_clear_error(daemon: ThreadedDaemon) -> None:
    iii("worker", "add", "iii-http", env=daemon.env())
    out = iii("worker", "restart", "iii-http", env=daemon.env())
    assert out.returncode == 1
    assert out.stderr.startswith("error: worker 'iii-http' is a config worker")


def test_logs_follow_prints_until_ctrl_c(daemon: ThreadedDaemon) -> None:
    proc = subprocess.Popen([str(BIN / "iii"), "worker", "logs", "w0", "-n", "2", "-f"],
                            env=daemon.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        seen = [proc.stdout.readline().strip() for _ in range(4)]
        assert seen == ["line 4", "line 5", "new 1", "new 2"]
        assert proc.poll() is None  # still following
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(TIMEOUT) == 130
        except subprocess.TimeoutExpired:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            stack = Path(f"/proc/{proc.pid}/wchan").read_text()
            pytest.fail(f"iii logs -f ignored SIGINT: wchan={stack}\n{status}")
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def test_remove_image_pull_and_list(daemon: ThreadedDaemon) -> None:
    out = iii("worker", "remove", "w1", env=daemon.env())
    assert out.returncode == 0 and out.stdout.strip() == "removed worker 'w1' (freed 3.0 MiB)"
    out = iii("image", "pull", "busybox", env=daemon.env())
    assert out.returncode == 0, out.stderr
    assert "pull: blob (5/10 B)" in out.stdout and "sha256:abab" in out.stdout
    out = iii("image", "list", env=daemon.env())
    assert out.stdout.splitlines()[0].split() == ["REF", "DIGEST", "SIZE"]


# ---- against a real daemon process ---------------------------------------------------------

def real_env(home: Path, autostart: bool) -> dict[str, str]:
    env = {**os.environ, "III_HOME": str(home), "III_URL": "ws://127.0.0.1:9"}
    env.pop("III_SOCKET", None)
    if autostart:
        env.pop("III_NO_AUTOSTART", None)
    else:
        env["III_NO_AUTOSTART"] = "1"
    return env


def test_daemon_status_does_not_autostart(iii_home: Path) -> None:
    out = iii("daemon", "status", env=real_env(iii_home, autostart=True))
    assert out.returncode == 1 and out.stdout.startswith("daemon: not running")
    assert not (iii_home / "iii.sock").exists()


def test_no_autostart_gives_error_and_hint(iii_home: Path) -> None:
    out = iii("worker", "list", "--json", env=real_env(iii_home, autostart=False))
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.splitlines() == [
        f"error: no iii daemon is running on {iii_home / 'iii.sock'}",
        "hint: start one with `iii daemon run` (autostart is off: III_NO_AUTOSTART=1)"]


def test_autostart_status_and_stop_of_a_real_daemon(iii_home: Path) -> None:
    env = real_env(iii_home, autostart=True)
    out = iii("worker", "list", "--json", env=env)  # starts the daemon, whatever list answers
    assert out.returncode in (0, 1) and "Traceback" not in out.stderr
    status = iii("daemon", "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["protocol"] == 1 and info["socket"] == str(iii_home / "iii.sock")
    human = iii("daemon", "status", env=env)
    assert human.stdout.startswith(f"daemon       running (pid {info['pid']}")
    stop = iii("daemon", "stop", env=env)
    assert stop.returncode == 0 and stop.stdout.strip() == "daemon stopped"
    assert not (iii_home / "iii.sock").exists()
    again = iii("daemon", "stop", env=env)
    assert again.returncode == 0 and again.stdout.strip() == "the daemon is not running"


def test_daemon_run_in_the_foreground_stops_on_sigterm(iii_home: Path) -> None:
    env = real_env(iii_home, autostart=False)
    proc = subprocess.Popen([str(BIN / "iii"), "daemon", "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: (iii_home / "iii.sock").exists() or proc.poll() is not None,
                   TIMEOUT, "the daemon socket")
        assert iii("daemon", "status", env=env).returncode == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
        assert not (iii_home / "iii.sock").exists()
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.skipif(not Path("/usr/bin/script").exists(), reason="needs util-linux script")
def test_on_a_tty_list_is_a_rich_table_and_add_shows_progress_bars(
        daemon: ThreadedDaemon) -> None:
    def on_tty(command: str) -> str:
        out = subprocess.run(["/usr/bin/script", "-qefc", command, "/dev/null"],
                             env={**daemon.env(), "COLUMNS": "100", "TERM": "xterm"},
                             capture_output=True, text=True, timeout=TIMEOUT, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    table = on_tty(f"{BIN / 'iii'} worker list")
    header = next(line for line in table.splitlines() if "NAME" in line)
    assert all(col in header for col in ("TYPE", "STATUS", "PID", "ISOLATION", "ENGINE"))
    assert "Local" in table
    added = on_tty(f"{BIN / 'iii'} worker add /p/tty")
    assert "pull: layers" in added and "added worker 'tty'" in added
    assert "━" in added  # rich's bar, not the plain "(1/3 layers)" lines
    assert "(1/3 layers)" not in added


@pytest.mark.parametrize("argv", [("worker", "list"), ("worker", "list", "--json"),
                                  ("image", "list", "--json"), ("image", "list")], ids=" ".join)
def test_the_typer_free_fast_path_prints_what_typer_prints(daemon: ThreadedDaemon,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           argv: tuple[str, ...]) -> None:
    from typer.testing import CliRunner

    from client.cli import app

    for key, value in daemon.env().items():
        monkeypatch.setenv(key, value)
    via_typer = CliRunner().invoke(app, list(argv))
    assert via_typer.exit_code == 0, via_typer.output
    fast = iii(*argv, env=daemon.env())
    assert fast.returncode == 0 and fast.stdout == via_typer.stdout


def test_logs_json_follow_prints_the_result_then_one_json_line_per_log_line(
        daemon: ThreadedDaemon) -> None:
    proc = subprocess.Popen([str(BIN / "iii"), "worker", "logs", "w0", "-n", "1", "-f",
                             "--json"], env=daemon.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]
        assert lines == [{"lines": ["line 5"]}, {"name": "w0", "line": "new 1"},
                         {"name": "w0", "line": "new 2"}]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 130
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def test_a_bad_name_is_refused_by_the_cli_with_the_manifest_message(iii_home: Path,
                                                                      tmp_path: Path) -> None:
    from manifests.spec import invalid_name_message

    # No daemon at all: the name is checked before one is needed (or autostarted).
    env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
    env.update(III_HOME=str(iii_home), III_NO_AUTOSTART="1")
    out = iii("worker", "add", str(tmp_path), "--name", "bad name!", env=env)
    assert out.returncode == 2, out.stderr
    assert out.stderr == f"error: --name: {invalid_name_message('worker name', 'bad name!')}\n"


def test_add_of_a_bare_name_that_is_a_directory_here_hints_the_path(daemon: ThreadedDaemon,
                                                                    tmp_path: Path) -> None:
    (tmp_path / "my-project").mkdir()
    out = iii("worker", "add", "my-project", env=daemon.env(), cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == "hint: did you mean ./my-project?"
    listed = iii("worker", "list", "--json", env=daemon.env())
    assert "my-project" not in listed.stdout  # no bogus config entry was written
    assert iii("worker", "add", "my-project", env=daemon.env()).returncode == 0  # elsewhere: ok


@pytest.mark.parametrize("argv", [("worker", "add", "--help"), ("worker", "stop", "--help")],
                         ids=["add", "stop"])
def test_help_does_not_render_types_as_placeholders(argv: tuple[str, ...]) -> None:
    # typer >= 0.27 renders every option's type (`<str>`, and `<bool>` for plain flags):
    # noise in the help of a CLI whose flags are mostly switches. pyproject pins below it.
    env = {**os.environ, "COLUMNS": "120"}
    out = iii(*argv, env=env)
    assert out.returncode == 0, out.stderr
    assert "--force" in out.stdout or "--timeout" in out.stdout
    assert "<bool>" not in out.stdout and "<str>" not in out.stdout, out.stdout


@pytest.mark.parametrize("argv", [("worker", "list", "--json"), ("image", "list", "--json")],
                         ids=" ".join)
def test_the_json_fast_path_imports_neither_typer_nor_msgspec(daemon: ThreadedDaemon,
                                                              argv: tuple[str, ...]) -> None:
    code = ("import sys\nfrom client.cli import _dispatch_fast\ntry:\n"
            f"    _dispatch_fast({argv!r})\nexcept SystemExit as exc:\n"
            "    assert exc.code == 0, exc.code\n"
            "print([m for m in ('typer', 'rich', 'msgspec', 'client.protocol.messages') "
            "if m in sys.modules], file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], env=daemon.env(), capture_output=True,
                         text=True, check=True, timeout=TIMEOUT)
    assert out.stdout.startswith("{") and out.stderr.strip() == "[]"
