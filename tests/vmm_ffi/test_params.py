"""The handshake Structs: decoding, validation, the exit-code convention."""

from __future__ import annotations

import json

import msgspec
import pytest

from vmm_ffi.params import (
    PROTOCOL_VERSION,
    DirectoryRoot,
    ExitStatus,
    LaunchParams,
    LaunchResult,
    OverlayRoot,
    decode_params,
    decode_result,
    encode,
    read_exit_status,
)

BASE = {"name": "w", "backend": "namespace", "merged": "/m", "argv": ["sh"],
        "log_path": "/l/worker.log", "exit_path": "/l/exit.json",
        "rootfs": {"kind": "overlay", "lower": ["/img"], "upper": "/u", "work": "/w"}}


def with_(**changes: object) -> bytes:
    return json.dumps({**BASE, **changes}).encode()


def test_defaults_and_round_trip() -> None:
    params = decode_params(with_())
    assert params.version == PROTOCOL_VERSION
    assert isinstance(params.rootfs, OverlayRoot)
    assert (params.env, params.workdir, params.binds, params.cgroup) == ({}, "/", [], None)
    assert decode_params(encode(params)) == params


def test_directory_root() -> None:
    params = decode_params(with_(rootfs={"kind": "directory", "path": "/copy"}))
    assert params.rootfs == DirectoryRoot(path="/copy")


@pytest.mark.parametrize("changes", [
    {"backend": "docker"},
    {"argv": []},
    {"merged": "relative/dir"},
    {"rootfs": {"kind": "overlay", "lower": [], "upper": "/u", "work": "/w"}},
    {"rootfs": {"kind": "zfs", "path": "/x"}},
    {"cpus": 0}, {"cpus": 256}, {"memory_mib": 1},
    {"surprise": 1},
    {"version": 2},
    {"env": {"A": 1}},
    {"workdir": "workspace"},
], ids=["backend", "empty-argv", "relative-merged", "no-lower", "root-kind", "cpus-0",
        "cpus-256", "memory-1", "unknown-field", "version-2", "env-not-str", "relative-workdir"])
def test_bad_params_are_rejected(changes: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_params(with_(**changes))


def test_result_and_exit_status_round_trip() -> None:
    result = LaunchResult(version=1, pid=10, backend="namespace", sandbox_pid=11,
                          started_at=1.0, root_mode="overlay", limits="enforced")
    assert decode_result(encode(result)) == result
    status = ExitStatus(exit_code=143, signal=15, finished_at=2.0)
    assert read_exit_status(encode(status)) == status
    # newer launchers may add result fields: older daemons keep working
    extended = json.loads(encode(result)) | {"control": "x"}
    assert decode_result(json.dumps(extended)) == result


def test_params_are_frozen() -> None:
    params = decode_params(with_())
    with pytest.raises(AttributeError):
        params.name = "other"  # type: ignore[misc]
    assert isinstance(params, LaunchParams)
