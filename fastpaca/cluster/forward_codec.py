"""Bytes of a forwarded conversation operation and of its answer.

Owns the ``conv`` RPC payloads: an operation (upsert, tombstone, append, get,
tail, replay) with its arguments and the caller's remaining time, the reply
for each kind of result, and the error codes that carry domain errors back
(``error_to_remote`` / ``remote_to_error``). Pure encoding: no IO, no retry.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import Any

import orjson

from fastpaca.cluster.rpc import RemoteError
from fastpaca.errors import (
    ConversationNotFound,
    ConversationTombstoned,
    IdempotencyConflict,
    Overloaded,
    SequenceConflict,
    Unavailable,
)
from fastpaca.store.messages import NewMessage
from fastpaca.store.reads import ConversationView, StoredMessage
from fastpaca.store.results import AppendApplied, AppendedItem, ConversationApplied
from fastpaca.store.state import ConversationState

__all__ = [
    "ForwardedOp",
    "LeaderMoved",
    "decode_append",
    "decode_applied",
    "decode_messages",
    "decode_op",
    "decode_view",
    "encode_append",
    "encode_applied",
    "encode_messages",
    "encode_op",
    "encode_view",
    "error_to_remote",
    "remote_to_error",
]

_RECORD = struct.Struct(">QI")


class LeaderMoved(Exception):
    """This node does not lead the group (any more); ``leader_hint`` may know."""

    def __init__(self, group_id: int, leader_hint: str | None) -> None:
        super().__init__(f"group {group_id}: led by {leader_hint or 'unknown'}")
        self.group_id = group_id
        self.leader_hint = leader_hint


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardedOp:
    op: str
    conversation_id: str
    timeout_ms: int
    args: dict[str, Any]


def encode_op(op: ForwardedOp) -> bytes:
    return orjson.dumps({"o": op.op, "c": op.conversation_id, "t": op.timeout_ms, "a": op.args})


def decode_op(data: bytes) -> ForwardedOp:
    raw = orjson.loads(data)
    return ForwardedOp(op=raw["o"], conversation_id=raw["c"], timeout_ms=raw["t"], args=raw["a"])


def message_args(messages: list[NewMessage]) -> list[dict[str, Any]]:
    return [
        {"r": m.role, "p": list(m.parts), "m": m.metadata, "n": m.token_count} for m in messages
    ]


def messages_from_args(raw: list[dict[str, Any]]) -> list[NewMessage]:
    return [NewMessage(role=m["r"], parts=m["p"], metadata=m["m"], token_count=m["n"]) for m in raw]


# --- replies ------------------------------------------------------------------------


def encode_append(result: AppendApplied) -> bytes:
    items = [[i.seq, i.version, i.token_count] for i in result.items]
    return orjson.dumps({"i": items, "d": result.deduped})


def decode_append(data: bytes) -> AppendApplied:
    raw = orjson.loads(data)
    items = tuple(AppendedItem(seq=s, version=v, token_count=t) for s, v, t in raw["i"])
    return AppendApplied(items=items, deduped=raw["d"])


def encode_applied(result: ConversationApplied) -> bytes:
    return orjson.dumps(
        {
            "c": result.conversation_id,
            "s": dataclasses.asdict(result.state),
            "m": result.metadata_json.decode(),
            "n": result.created,
        }
    )


def decode_applied(data: bytes) -> ConversationApplied:
    raw = orjson.loads(data)
    return ConversationApplied(
        conversation_id=raw["c"],
        state=ConversationState(**raw["s"]),
        metadata_json=raw["m"].encode(),
        created=raw["n"],
    )


def encode_view(view: ConversationView) -> bytes:
    return orjson.dumps(
        {
            "c": view.conversation_id,
            "s": dataclasses.asdict(view.state),
            "m": view.metadata_json.decode(),
        }
    )


def decode_view(data: bytes) -> ConversationView:
    raw = orjson.loads(data)
    return ConversationView(
        conversation_id=raw["c"],
        state=ConversationState(**raw["s"]),
        metadata_json=raw["m"].encode(),
    )


def encode_messages(messages: list[StoredMessage]) -> bytes:
    parts = []
    for message in messages:
        parts.append(_RECORD.pack(message.seq, len(message.body)))
        parts.append(message.body)
    return b"".join(parts)


def decode_messages(data: bytes) -> list[StoredMessage]:
    messages, offset = [], 0
    while offset < len(data):
        seq, size = _RECORD.unpack_from(data, offset)
        offset += _RECORD.size
        messages.append(StoredMessage(seq=seq, body=bytes(data[offset : offset + size])))
        offset += size
    return messages


# --- errors -------------------------------------------------------------------------


def error_to_remote(exc: Exception) -> RemoteError | None:
    """The wire form of a domain error the caller must see; None for others."""
    match exc:
        case LeaderMoved():
            return RemoteError("not_leader", exc.leader_hint or "")
        case ConversationNotFound():
            return RemoteError("not_found", str(exc))
        case ConversationTombstoned():
            return RemoteError("tombstoned", str(exc))
        case SequenceConflict():
            return RemoteError("conflict", str(exc.current_version))
        case IdempotencyConflict():
            return RemoteError("idempotency_conflict", str(exc))
        case Unavailable() | TimeoutError():
            return RemoteError("unavailable", str(exc))
        case Overloaded():
            return RemoteError("overloaded", str(exc))
    return None


def remote_to_error(error: RemoteError) -> Exception | None:
    """The domain error a remote failure stands for; None when it is one to
    retry (not leader, unavailable)."""
    match error.code:
        case "not_found":
            return ConversationNotFound(error.message)
        case "tombstoned":
            return ConversationTombstoned(error.message)
        case "conflict":
            return SequenceConflict(int(error.message))
        case "idempotency_conflict":
            return IdempotencyConflict(error.message)
        case "overloaded":
            return Overloaded(error.message)
        case "not_leader" | "unavailable":
            return None
    return Unavailable(f"forwarded request failed: {error.code}: {error.message}")
