"""What a command does once its arguments are read, without typer: one request to the daemon and
its output. typer's command definitions (``client.commands``) and ``client.cli``'s fast path
both call these, with the same keyword arguments (``client.cli_grammar`` reads argv for both), so
a command prints the same whichever path answers it.

``--json`` prints the daemon's result verbatim (:func:`print_result`, no msgspec); the human
forms read it as the typed struct of ``client.protocol`` (:func:`call`), importing msgspec and
the wire types only then. Errors are ``client.errors.CliError``; the caller prints them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from client.rpc_client import RpcClient

R = TypeVar("R")


def print_result(method: str, params: Mapping[str, Any] | None = None) -> None:
    """``--json``: one request (with autostart), its result printed as the daemon sent it."""
    from client.output import print_json_raw

    with RpcClient() as client:
        print_json_raw(client.call_raw(method, params))


def call(method: str, params: Mapping[str, Any] | None, result_type: type[R], *,
         progress: bool = False) -> R:
    """One request (with autostart), its result as ``result_type``; with ``progress`` the
    daemon's progress notifications are shown (bars on a TTY, plain lines otherwise)."""
    with RpcClient() as client:
        if not progress:
            return client.call(method, params, result_type=result_type)
        from client.output import ProgressView

        with ProgressView() as view:
            return client.call(method, {**(params or {}), "progress": True},
                               on_notification=view, result_type=result_type)


def worker_list(as_json: bool) -> None:
    """``iii worker list``."""
    if as_json:
        print_result("worker.list")
        return
    from client.output import print_workers
    from client.protocol.messages import WorkerListResult

    result = call("worker.list", None, WorkerListResult)
    print_workers(result.workers, result.engine_age_s, result.config_error)


def image_list(as_json: bool) -> None:
    """``iii image list``."""
    if as_json:
        print_result("image.list")
        return
    from client.output import print_table
    from client.protocol.messages import ImageListResult

    images = call("image.list", None, ImageListResult).images
    if images:
        print_table(("REF", "DIGEST", "SIZE"), [
            [i.ref, i.digest[:19], f"{i.size_bytes / 1048576:.1f} MiB"] for i in images])
    else:
        print("no cached images")


def worker_exec(name: str, command: list[str], env: list[str], workdir: str | None,
                use_tty: bool | None, timeout: float | None) -> int:
    """``iii worker exec``: the command's exit code."""
    from client.exec_cli import env_pairs, run_exec

    params: dict[str, Any] = {"name": name, "argv": command, "env": env_pairs(env)}
    if workdir is not None:
        params["workdir"] = workdir
    if timeout is not None:
        params["timeout_s"] = timeout
    return run_exec(params, sys.stdin.isatty() if use_tty is None else use_tty)


def export_usage_ok(to: str | None, kubernetes: bool) -> bool:
    """``worker export`` takes exactly one of ``--to`` and ``--kubernetes`` (else typer's
    usage error)."""
    return (to is None) != (not kubernetes)


def worker_export(name: str, to: str | None, kubernetes: bool, image: str | None,
                  namespace: str, engine_url: str | None, runtime_class: str | None,
                  replicas: int, output: Path | None, as_json: bool) -> None:
    """``iii worker export``: an OCI image (``--to``) or Kubernetes YAML."""
    if kubernetes:
        params: dict[str, Any] = {"name": name, "namespace": namespace, "replicas": replicas}
        for key, value in (("image", image), ("engine_url", engine_url),
                           ("runtime_class", runtime_class)):
            if value is not None:
                params[key] = value
        _kubernetes(params, image, output, as_json)
        return
    assert to is not None
    if to.startswith("oci:") and len(to) > 4:
        # the daemon has its own working directory: send it an absolute path
        to = "oci:" + os.path.abspath(to[4:])
    if as_json:
        print_result("worker.export", {"name": name, "to": to})
        return
    from client.protocol.messages import WorkerExportResult

    done = call("worker.export", {"name": name, "to": to}, WorkerExportResult, progress=True)
    print(f"exported worker '{name}' to {done.destination}")
    print(f"digest {done.digest} (added layer {done.size / (1024 * 1024):.1f} MiB)")


def _kubernetes(params: dict[str, Any], image: str | None, output: Path | None,
                as_json: bool) -> None:
    if as_json:
        print_result("worker.kubernetes", params)
        return
    from client.protocol.messages import WorkerKubernetesResult

    result = call("worker.kubernetes", params, WorkerKubernetesResult)
    if image is not None and result.image != image:  # a tag, pinned by the daemon
        print(f"using {result.image} (the digest {image} names at its registry now)",
              file=sys.stderr)
    if output is None:
        print(result.yaml, end="")
        return
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(result.yaml)
    os.replace(tmp, output)
    print(f"wrote {output} (image {result.image})")
