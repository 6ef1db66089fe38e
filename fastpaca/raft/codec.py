"""Bytes for raft values: conf-change entry payloads and wire frames.

The only raft module that turns values into bytes and back. Decoding never
trusts its input: anything malformed raises ``CodecError``.
"""

from __future__ import annotations

import orjson

from fastpaca.raft.messages import ConfChange, ConfChangeOp

__all__ = ["CodecError", "decode_conf_change", "encode_conf_change"]


class CodecError(ValueError):
    """Raised for bytes that do not decode to a valid value."""


def encode_conf_change(cc: ConfChange) -> bytes:
    return orjson.dumps({"op": int(cc.op), "node": cc.node_id})


def decode_conf_change(data: bytes) -> ConfChange:
    try:
        raw = orjson.loads(data)
        return ConfChange(op=ConfChangeOp(raw["op"]), node_id=str(raw["node"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"bad conf change payload: {exc}") from exc
