"""Our ``sandbox::*`` function list, payload fields and error codes against upstream iii's Rust
structs, as ``upstream_sandbox_contract.json`` writes them down (with the deviations we chose)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

import client.protocol.sandbox as wire
from daemon.ephemeral.errors import DOCS_BASE, SCode, sandbox_error

CONTRACT: dict[str, Any] = json.loads(
    Path(__file__).with_name("upstream_sandbox_contract.json").read_text())
EMPTY_REQUESTS = {"ListRequest", "CatalogListRequest"}  # upstream's empty structs


def test_the_same_sixteen_functions() -> None:
    assert set(wire.SANDBOX_FUNCTIONS) == set(CONTRACT["functions"])
    assert len(wire.SANDBOX_FUNCTIONS) == 16


@pytest.mark.parametrize("function_id", sorted(CONTRACT["functions"]))
def test_each_function_takes_and_returns_upstreams_structs(function_id: str) -> None:
    request, response = CONTRACT["functions"][function_id]
    ours_request, ours_response = wire.SANDBOX_METHODS[wire.SANDBOX_FUNCTIONS[function_id]]
    if request in EMPTY_REQUESTS:
        assert msgspec.structs.fields(ours_request) == ()
    else:
        assert ours_request.__name__ == request
    assert ours_response.__name__ == response


def _expected(name: str) -> dict[str, bool]:
    """Upstream's fields of ``name`` → required, with our documented deviations applied."""
    fields = {k: v == "required" for k, v in CONTRACT["structs"][name].items()}
    deviations = CONTRACT["deviations"]
    for field in deviations["removed"].get(name, []):
        del fields[field]
    for field in deviations["added"].get(name, []):
        fields[field] = False
    return fields


@pytest.mark.parametrize("name", sorted(CONTRACT["structs"]))
def test_fields_and_required_match(name: str) -> None:
    ours = getattr(wire, name)
    got = {f.encode_name: f.required for f in msgspec.structs.fields(ours)}
    assert got == _expected(name)


def test_error_codes_types_and_retryable_match() -> None:
    codes = CONTRACT["error_codes"]
    assert codes["docs_base"] == DOCS_BASE
    assert [c["code"] for c in codes["codes"]] == [c.name for c in SCode]
    for row in codes["codes"]:
        code = SCode(row["code"])
        assert (code.error_type, code.retryable) == (row["type"], row["retryable"]), row


def test_error_payload_shape() -> None:
    payload = sandbox_error(SCode.S211, "parent directory not found: /a/b",
                            fix={"parents": True}).payload()
    assert list(payload) == CONTRACT["error_payload_fields"]
    assert payload["docs_url"].endswith("#S211") and payload["type"] == "filesystem"
    assert msgspec.convert(payload, wire.SandboxErrorPayload).fix == {"parents": True}
