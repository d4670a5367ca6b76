"""Snapshot of the wire protocol's JSON Schema: any change to client/protocol/ shows in review.

The snapshot pins the wire (names, fields, types, required, enums). Descriptions are kept for the
reader but normalised with ``inspect.cleandoc``: msgspec 0.22 kept a docstring's indentation and
0.23 strips it, and a library's formatting is not a protocol change.

After an intended change, regenerate with ``III_UPDATE_SNAPSHOTS=1 pytest tests/client``.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import msgspec

from client.protocol import constants, messages, methods

SNAPSHOT = Path(__file__).with_name("protocol_schema.json")


def current_schema() -> dict:
    types = []
    for method in sorted(methods.METHODS):
        params, result = methods.METHODS[method]
        types += [params, result]
    types += [messages.ProgressNotification, messages.LogNotification,
              messages.EventNotification, messages.WorkerValidateParams,
              messages.LifecycleTriggerConfig]
    unique = list(dict.fromkeys(types))
    _, components = msgspec.json.schema_components(unique)
    return normalised({
        "protocol_version": constants.PROTOCOL_VERSION,
        "max_line_bytes": constants.MAX_LINE_BYTES,
        "error_codes": {code.name: int(code) for code in constants.ErrorCode},
        "methods": {m: {"params": p.__name__, "result": r.__name__}
                    for m, (p, r) in sorted(methods.METHODS.items())},
        "components": components,
        "engine_functions": dict(sorted(methods.ENGINE_FUNCTIONS.items())),
        "engine_control_functions": sorted(methods.ENGINE_CONTROL_FUNCTIONS),
        "engine_trigger_types": [methods.LIFECYCLE_TRIGGER_TYPE],
    })


def normalised(node: Any) -> Any:
    """``node`` with every schema ``description`` passed through ``inspect.cleandoc``."""
    if isinstance(node, dict):
        return {key: inspect.cleandoc(value) if key == "description" and isinstance(value, str)
                else normalised(value) for key, value in node.items()}
    if isinstance(node, list):
        return [normalised(item) for item in node]
    return node


def test_protocol_schema_matches_the_snapshot() -> None:
    schema = json.loads(json.dumps(current_schema(), sort_keys=True))
    if os.environ.get("III_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    assert SNAPSHOT.exists(), "no snapshot: run with III_UPDATE_SNAPSHOTS=1 once"
    assert schema == json.loads(SNAPSHOT.read_text()), (
        "the wire protocol changed; review it, then run with III_UPDATE_SNAPSHOTS=1")


def test_descriptions_compare_equal_under_both_msgspec_renderings() -> None:
    # The same docstring as msgspec 0.22.0 rendered it (indented continuation lines) and as
    # 0.23.0 does (dedented): one snapshot must hold for both.
    rendered_by_0_22 = {"description": "Run ``argv`` in the sandbox. The request carries\n"
                                       "    stdin, stdout and stderr.", "type": "object"}
    rendered_by_0_23 = {"description": "Run ``argv`` in the sandbox. The request carries\n"
                                       "stdin, stdout and stderr.", "type": "object"}
    assert normalised({"X": rendered_by_0_22}) == normalised({"X": rendered_by_0_23})
    # ... while a change to the wire itself still shows.
    assert normalised({"X": rendered_by_0_22}) != normalised(
        {"X": {**rendered_by_0_23, "type": "array"}})


def test_params_forbid_unknown_fields_and_results_tolerate_them() -> None:
    for params, result in methods.METHODS.values():
        assert params.__struct_config__.forbid_unknown_fields, params.__name__
        assert not result.__struct_config__.forbid_unknown_fields, result.__name__


def test_engine_functions_reuse_socket_methods() -> None:
    """The engine bus has no schema of its own: each function is a socket method."""
    assert set(methods.ENGINE_FUNCTIONS.values()) <= set(methods.METHODS)
    assert methods.ENGINE_CONTROL_FUNCTIONS <= set(methods.ENGINE_FUNCTIONS)


def test_the_wire_name_rule_is_the_manifest_rule() -> None:
    # the wire keeps its own copy (importing manifests would slow every `iii` command);
    # this pins it to the one source of truth.
    from typing import get_args

    from manifests.spec import NAME_PATTERN

    meta = get_args(messages.WorkerName)[1]
    assert meta.pattern == f"^{NAME_PATTERN}$"
