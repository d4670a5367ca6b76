"""Constants of the socket protocol (SPEC §11) with no dependencies, so that the fast CLI path
(``iii worker list --json``) can use them without importing msgspec."""

from __future__ import annotations

import enum

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 16 * 1024 * 1024  # one JSON-RPC message per line, at most this long


class ErrorCode(enum.IntEnum):
    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL = -32603
    NOT_FOUND = -32001
    ALREADY_EXISTS = -32002
    INVALID_PROJECT = -32003
    IMAGE_ERROR = -32004
    ISOLATION_UNAVAILABLE = -32005
    SCRIPT_FAILED = -32006
    CONFLICT = -32007
    INVALID_STATE = -32008
    BUSY = -32009
