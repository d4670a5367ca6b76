"""``iii sandbox``: ephemeral sandboxes from the terminal (the daemon's ``sandbox.*`` methods,
upstream iii's ``sandbox::*`` functions). Every command takes ``--json`` (the result verbatim).

    iii sandbox run python -c 'print(2+2)'        # create, run, stop; exits with the code
    iii sandbox create python                      # prints the sandbox id
    iii sandbox exec ID -- python3 -V              # a pty on a terminal, as `iii worker exec`
    iii sandbox cp ./main.py ID:/app/main.py       # ID:/path on either side
    iii sandbox ls
    iii sandbox stop ID
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from client.errors import CliError

if TYPE_CHECKING:
    from client.protocol.sandbox import ExecResponse, RunResponse

R = TypeVar("R")

sandbox_app = typer.Typer(no_args_is_help=True, help="Ephemeral sandboxes (sandbox::*).")

JSON_OPT = typer.Option(False, "--json", help="Print the daemon's JSON result verbatim.")
LANG_OF_IMAGE = {"python": "python", "node": "node", "bun": "bun", "shell": "shell"}


def _call(method: str, params: dict[str, Any]) -> Any:
    """The result of ``sandbox.<method>`` as the daemon sent it (what ``--json`` prints)."""
    from client.rpc_client import RpcClient

    with RpcClient() as client:
        return client.call(f"sandbox.{method}", params)


def _read(result: Any, result_type: type[R], method: str) -> R:
    """``result`` (of ``sandbox.<method>``) as its struct in ``client.protocol.sandbox``."""
    from client.rpc_client import decode

    return decode(result, result_type, f"answer to sandbox.{method}")


def _run(body: Any) -> Any:
    from client.commands.common import run_cli

    return run_cli(body)


def _print_output(result: RunResponse) -> None:
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.write(result.stderr)
    for stream, truncated in (("stdout", result.stdout_truncated),
                              ("stderr", result.stderr_truncated)):
        if truncated:
            print(f"iii: {stream} truncated (sandboxes.max_output_bytes)", file=sys.stderr)


def _exit_code(result: RunResponse | ExecResponse) -> int:
    return 124 if result.exit_code is None else result.exit_code


@sandbox_app.command("run")
def sandbox_run(
    image: str = typer.Argument(..., help="A catalog name (python, node, bun, shell, ...)."),
    file: Path | None = typer.Argument(None, help="A file of code to run (or -c)."),  # noqa: B008
    code: str | None = typer.Option(None, "-c", "--code", help="The code to run."),
    lang: str | None = typer.Option(None, "--lang", help="node, python, shell or an "
                                    "interpreter path (default: from the image name)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the sandbox; print its id."),
    network: bool = typer.Option(False, "--network", help="Give it a network."),
    timeout_ms: int | None = typer.Option(None, "--timeout-ms", min=1),
    as_json: bool = JSON_OPT,
) -> None:
    """Boot a sandbox, run the code, stop it; exits with the code's exit status."""
    def body() -> int:
        if (code is None) == (file is None):
            raise CliError("give the code with -c CODE or as a FILE (exactly one)")
        text = code if code is not None else _read_text(file)  # type: ignore[arg-type]
        chosen = lang or LANG_OF_IMAGE.get(image)
        if chosen is None:
            raise CliError(f"which language? image {image!r} has no default: pass --lang")
        params: dict[str, Any] = {"image": image, "code": text, "lang": chosen,
                                  "keep_sandbox": keep, "network": network}
        if not sys.stdin.isatty():
            params["stdin"] = base64.b64encode(sys.stdin.buffer.read()).decode()
        if timeout_ms is not None:
            params["timeout_ms"] = timeout_ms
        from client.protocol.sandbox import RunResponse

        as_sent = _call("run", params)
        result = _read(as_sent, RunResponse, "run")
        if as_json:
            print(json.dumps(as_sent))
        else:
            _print_output(result)
            if keep:
                print(f"sandbox: {result.sandbox_id}", file=sys.stderr)
        return _exit_code(result)

    raise typer.Exit(_run(body))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from exc


@sandbox_app.command("create")
def sandbox_create(
    image: str = typer.Argument(..., help="A catalog name (python, node, bun, shell, ...)."),
    name: str | None = typer.Option(None, "--name", help="A label shown by `iii sandbox ls`."),
    network: bool = typer.Option(False, "--network", help="Give it a network."),
    idle_timeout: int | None = typer.Option(None, "--idle-timeout", min=1,
                                            help="Seconds idle before it is reaped."),
    env: list[str] = typer.Option([], "--env", "-e", help="K=V (repeatable)."),  # noqa: B008
    as_json: bool = JSON_OPT,
) -> None:
    """Boot a sandbox and print its id."""
    def body() -> None:
        params: dict[str, Any] = {"image": image, "network": network, "env": list(env)}
        if name is not None:
            params["name"] = name
        if idle_timeout is not None:
            params["idle_timeout_secs"] = idle_timeout
        result = _call("create", params)
        if as_json:
            print(json.dumps(result))
            return
        from client.protocol.sandbox import CreateResponse

        print(_read(result, CreateResponse, "create").sandbox_id)

    _run(body)


@sandbox_app.command("exec")
def sandbox_exec(
    sandbox_id: str = typer.Argument(..., help="From `iii sandbox create`."),
    command: list[str] = typer.Argument(..., help="The command and its arguments (after --)."),  # noqa: B008
    env: list[str] = typer.Option([], "--env", "-e", help="K=V (repeatable)."),  # noqa: B008
    workdir: str | None = typer.Option(None, "--workdir", "-w", help="In-sandbox directory."),
    use_tty: bool | None = typer.Option(None, "--tty/--no-tty", "-t",
                                        help="A pty for the command (default: when stdin is one)."),
    timeout: float | None = typer.Option(None, "--timeout", min=0.001,
                                         help="Seconds; then the command is stopped, exit 124."),
    as_json: bool = JSON_OPT,
) -> None:
    """Run a command in a sandbox; exits with its code. With --json the output is captured
    and printed as sandbox::exec's result."""
    def body() -> int:
        from client.exec_cli import env_pairs

        pairs = env_pairs(env)
        if as_json:
            params: dict[str, Any] = {"sandbox_id": sandbox_id, "argv": command, "env": pairs}
            if workdir is not None:
                params["workdir"] = workdir
            if timeout is not None:
                params["timeout_ms"] = max(1, int(timeout * 1000))
            from client.protocol.sandbox import ExecResponse

            as_sent = _call("exec", params)
            result = _read(as_sent, ExecResponse, "exec")
            print(json.dumps(as_sent))
            return _exit_code(result)
        stdio: dict[str, Any] = {"sandbox_id": sandbox_id, "argv": command, "env": pairs}
        if workdir is not None:
            stdio["workdir"] = workdir
        if timeout is not None:
            stdio["timeout_s"] = timeout
        from client.exec_cli import run_exec

        tty_mode = sys.stdin.isatty() if use_tty is None else use_tty
        return run_exec(stdio, tty_mode, method="sandbox.exec_stdio")

    raise typer.Exit(_run(body))


@sandbox_app.command("ls")
def sandbox_ls(as_json: bool = JSON_OPT) -> None:
    """List the live sandboxes."""
    def body() -> None:
        result = _call("list", {})
        if as_json:
            print(json.dumps(result))
            return
        from client.output import print_table
        from client.protocol.sandbox import ListResponse

        print_table(("ID", "IMAGE", "NAME", "AGE", "EXECS"), [
            [s.sandbox_id, s.image, s.name or "-", f"{s.age_secs}s",
             f"{s.exec_in_flight}/{s.exec_in_flight + s.exec_slots_free}"]
            for s in _read(result, ListResponse, "list").sandboxes])

    _run(body)


@sandbox_app.command("stop")
def sandbox_stop(sandbox_id: str = typer.Argument(..., help="From `iii sandbox create`."),
                 as_json: bool = JSON_OPT) -> None:
    """Stop a sandbox and delete everything it wrote."""
    def body() -> None:
        result = _call("stop", {"sandbox_id": sandbox_id, "wait": True})
        if as_json:
            print(json.dumps(result))
            return
        from client.protocol.sandbox import StopResponse

        print(f"stopped {_read(result, StopResponse, 'stop').sandbox_id}")

    _run(body)


def _split(spec: str) -> tuple[str | None, str]:
    """``ID:/path`` → (ID, /path); a local path → (None, path)."""
    head, sep, tail = spec.partition(":")
    if sep and tail.startswith("/") and "/" not in head and head:
        return head, tail
    return None, spec


@sandbox_app.command("cp")
def sandbox_cp(src: str = typer.Argument(..., help="A local path or ID:/path."),
               dst: str = typer.Argument(..., help="A local path or ID:/path."),
               as_json: bool = JSON_OPT) -> None:
    """Copy one file into or out of a sandbox (``ID:/path`` on either side)."""
    def body() -> None:
        (src_id, src_path), (dst_id, dst_path) = _split(src), _split(dst)
        if (src_id is None) == (dst_id is None):
            raise CliError("exactly one side must be ID:/path (a sandbox) and one a local path")
        if dst_id is not None:
            result = _upload(Path(src_path), dst_id, dst_path)
        else:
            assert src_id is not None
            result = _download(src_id, src_path, Path(dst_path))
        print(json.dumps(result) if as_json else f"copied {result['bytes']} bytes")

    _run(body)


def _upload(local: Path, sandbox_id: str, path: str) -> dict[str, Any]:
    try:
        data = local.read_bytes()
        mode = f"{local.stat().st_mode & 0o7777:04o}"
    except OSError as exc:
        raise CliError(f"cannot read {local}: {exc.strerror}") from exc
    from client.protocol.sandbox import WriteResponse

    written = _read(_call("fs.write", {
        "sandbox_id": sandbox_id, "path": path, "parents": True, "mode": mode,
        "content_b64": base64.b64encode(data).decode()}), WriteResponse, "fs.write")
    return {"bytes": written.bytes_written, "path": written.path}


def _download(sandbox_id: str, path: str, local: Path) -> dict[str, Any]:
    from client.protocol.sandbox import ReadResponse

    read = _read(_call("fs.read", {"sandbox_id": sandbox_id, "path": path}), ReadResponse,
                 "fs.read")
    data = read.body.encode() if read.body is not None \
        else base64.b64decode(read.body_b64 or "")
    if local.is_dir():
        local = local / Path(path).name
    tmp = local.with_name(f".{local.name}.iii-tmp")
    try:
        tmp.write_bytes(data)
        os.chmod(tmp, int(read.mode, 8) & 0o777)
        os.replace(tmp, local)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CliError(f"cannot write {local}: {exc.strerror}") from exc
    return {"bytes": len(data), "path": str(local)}
