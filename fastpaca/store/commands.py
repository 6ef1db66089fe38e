"""State-machine commands and their compact byte codec.

Owns the typed commands a proposer puts into a Raft entry and the bytes they
travel as. A command carries every decision that depends on time or on the
proposer (timestamps, token counts, message bytes), so applying it is
deterministic. Decoding never trusts its input: malformed bytes raise
``CodecError``.

Layout: one tag byte, a u32-length JSON header, and for appends the stored
message bytes, each with a u32 length. Message bytes are carried verbatim so
the state machine stores them without re-encoding.

Values here are immutable by convention, not ``frozen``: they are built on
every append, and a frozen slots dataclass costs ~2.5x as much to build
(``object.__setattr__`` per field). Never assign to a field once built.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import orjson

from fastpaca.raft.codec import CodecError

__all__ = [
    "AckArchived",
    "AppendMessages",
    "Command",
    "TombstoneConversation",
    "UpsertConversation",
    "decode_command",
    "encode_command",
]

_U32 = struct.Struct(">I")


@dataclass(slots=True, kw_only=True)
class UpsertConversation:
    conversation_id: str
    metadata_json: bytes | None
    """Encoded JSON object replacing the metadata; None keeps it (new: ``{}``)."""
    now_ms: int


@dataclass(slots=True, kw_only=True)
class TombstoneConversation:
    conversation_id: str
    now_ms: int


@dataclass(slots=True, kw_only=True)
class AppendMessages:
    conversation_id: str
    messages: tuple[bytes, ...]
    """Stored message bytes (``messages.PreparedMessage.stored``), in order."""
    token_counts: tuple[int, ...]
    request_digest: bytes
    now_ms: int
    is_batch: bool = False
    if_version: int | None = None
    idempotency_key: str | None = None


@dataclass(slots=True, kw_only=True)
class AckArchived:
    """The archive holds every message up to ``upto_seq``. ``tail_keep`` is
    the proposer's ``FASTPACA_TAIL_KEEP``, carried so every replica trims the
    same messages whatever its own setting; None trims nothing."""

    conversation_id: str
    upto_seq: int
    tail_keep: int | None = None


Command = UpsertConversation | TombstoneConversation | AppendMessages | AckArchived


def _frame(tag: bytes, header: dict[str, Any], payloads: tuple[bytes, ...] = ()) -> bytes:
    head = orjson.dumps(header)
    parts = [tag, _U32.pack(len(head)), head]
    for payload in payloads:
        parts.append(_U32.pack(len(payload)))
        parts.append(payload)
    return b"".join(parts)


_RECENT_MAX = 8192
_recent: dict[int, tuple[bytes, Command]] = {}
"""Appends encoded by this process, by the id of their bytes, until decoded.

The node that proposes a command applies the very same bytes object (the
Raft log keeps it), so ``decode_command`` can hand back the command it came
from instead of parsing and re-checking it. The table holds the bytes, so
their id names no other object while listed; a hit also requires identity,
and encoding is deterministic and refuses what decoding would (``_encode``),
so a hit is exactly what decoding would give. Commands that never apply
(leadership lost) are dropped wholesale when the table is full."""


def encode_command(command: Command) -> bytes:
    data = _encode(command)
    if isinstance(command, AppendMessages):  # the hot one; the rest are rare
        if len(_recent) >= _RECENT_MAX:
            _recent.clear()
        _recent[id(data)] = (data, command)
    return data


def _encode(command: Command) -> bytes:
    match command:
        case AppendMessages():
            # What decoding would refuse is refused here, so that the
            # proposer (which skips decoding, see ``_recent``) and every
            # other replica always agree.
            _check_token_counts(len(command.messages), command.token_counts)
            if command.if_version is not None:
                _int(command.if_version)
            _int(command.now_ms)
            header = {
                "c": command.conversation_id,
                "n": command.token_counts,
                "h": command.request_digest.hex(),
                "t": command.now_ms,
                "b": command.is_batch,
                "v": command.if_version,
                "k": command.idempotency_key,
            }
            return _frame(b"A", header, command.messages)
        case UpsertConversation():
            meta = None if command.metadata_json is None else command.metadata_json.decode()
            return _frame(b"U", {"c": command.conversation_id, "m": meta, "t": command.now_ms})
        case TombstoneConversation():
            return _frame(b"T", {"c": command.conversation_id, "t": command.now_ms})
        case AckArchived():
            header = {"c": command.conversation_id, "s": command.upto_seq}
            if command.tail_keep is not None:
                header["t"] = command.tail_keep
            return _frame(b"K", header)


def decode_command(data: bytes) -> Command:
    recent = _recent.pop(id(data), None)
    if recent is not None and recent[0] is data:
        return recent[1]
    try:
        return _decode(data)
    except CodecError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, struct.error) as exc:
        raise CodecError(f"bad command: {exc!r}") from exc


def _decode(data: bytes) -> Command:
    tag = data[:1]
    (head_len,) = _U32.unpack_from(data, 1)
    offset = 5 + head_len
    if offset > len(data):
        raise CodecError("truncated command header")
    header = orjson.loads(data[5:offset])
    if not isinstance(header, dict):
        raise CodecError("command header is not an object")
    if tag == b"A":
        messages = []
        end = len(data)
        while offset < end:
            (size,) = _U32.unpack_from(data, offset)
            offset += 4
            if offset + size > end:
                raise CodecError("truncated message")
            messages.append(data[offset : offset + size])
            offset += size
        tokens = tuple(header["n"])
        _check_token_counts(len(messages), tokens)
        return AppendMessages(
            conversation_id=_str(header["c"]),
            messages=tuple(messages),
            token_counts=tokens,
            request_digest=bytes.fromhex(_str(header["h"])),
            now_ms=_int(header["t"]),
            is_batch=bool(header["b"]),
            if_version=None if header["v"] is None else _int(header["v"]),
            idempotency_key=None if header["k"] is None else _str(header["k"]),
        )
    if offset != len(data):
        raise CodecError("trailing bytes after command")
    if tag == b"U":
        meta = header["m"]
        return UpsertConversation(
            conversation_id=_str(header["c"]),
            metadata_json=None if meta is None else _str(meta).encode(),
            now_ms=_int(header["t"]),
        )
    if tag == b"T":
        return TombstoneConversation(conversation_id=_str(header["c"]), now_ms=_int(header["t"]))
    if tag == b"K":
        keep = header.get("t")
        return AckArchived(
            conversation_id=_str(header["c"]),
            upto_seq=_int(header["s"]),
            tail_keep=None if keep is None else _int(keep),
        )
    raise CodecError(f"unknown command tag {tag!r}")


def _check_token_counts(message_count: int, token_counts: tuple[int, ...]) -> None:
    """An append holds messages, each with a non-negative token count (the
    one rule both ``_encode`` and ``_decode`` enforce)."""
    for count in token_counts:
        _int(count)
    if not message_count or len(token_counts) != message_count:
        raise CodecError("append needs one token count per message")


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CodecError(f"expected a non-negative integer, got {value!r}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise CodecError(f"expected a string, got {value!r}")
    return value
