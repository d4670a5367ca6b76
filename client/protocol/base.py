"""The two bases of every wire type (``client.protocol.messages``, ``client.protocol.sandbox``)."""

from __future__ import annotations

import msgspec

__all__ = ["Params", "Result"]


class Params(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every request's params."""


class Result(msgspec.Struct, kw_only=True):
    """Base of every result and notification payload (unknown fields tolerated)."""
