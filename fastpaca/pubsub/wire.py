"""Bytes of pub/sub frames between nodes: interest announcements and event batches.

Owns the layout only (no IO, no state). A frame is one payload of the peer
transport's ``Channel.PUBSUB`` (the Redis adapter reuses the event record);
every integer is big-endian::

    frame:     kind u8 | body
    interest:  kind 1 (full set), 2 (add) or 3 (remove)
               body = repeated (id length u16 | conversation id utf-8)
    events:    kind 4
               body = repeated record
    loss:      kind 5 (events for these conversations were dropped on the way)
               body = repeated (id length u16 | conversation id utf-8)
    record:    id length u16 | event kind u8 | seq u64 | payload length u32
               | conversation id utf-8 | payload

An event kind is 0 (message, ``seq`` >= 1) or 1 (tombstone, ``seq`` 0 on the
wire, None in ``StreamEvent``). The payload is the websocket JSON the sender
built once (``publisher.event_for``); it crosses unchanged, so a receiver
never re-encodes it. Anything that does not split exactly into these parts
raises ``WireError``: the caller counts and drops the frame.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from fastpaca.pubsub.bus import StreamEvent

__all__ = [
    "EVENTS",
    "INTEREST_ADD",
    "INTEREST_FULL",
    "INTEREST_REMOVE",
    "LOSS",
    "WireError",
    "decode_events",
    "decode_interest",
    "decode_loss",
    "encode_events",
    "encode_interest",
    "encode_loss",
    "event_record",
    "frame_kind",
]

INTEREST_FULL: Final = 1
"""The sender's whole interest set; it replaces what the receiver knew."""
INTEREST_ADD: Final = 2
INTEREST_REMOVE: Final = 3
EVENTS: Final = 4
LOSS: Final = 5
"""The sender dropped events for these conversations (its queue to us was full)."""

_INTEREST_KINDS = frozenset((INTEREST_FULL, INTEREST_ADD, INTEREST_REMOVE))
_KINDS = frozenset((*_INTEREST_KINDS, EVENTS, LOSS))
_ID_LENGTH = struct.Struct(">H")
_RECORD = struct.Struct(">HBQI")
_MESSAGE, _TOMBSTONE = 0, 1
ID_BYTES_MAX: Final = 0xFFFF


class WireError(ValueError):
    """A frame that is empty, truncated, of an unknown kind, or carries bad text."""


def frame_kind(frame: bytes) -> int:
    """The frame's kind; WireError for an empty frame or an unknown kind."""
    if not frame:
        raise WireError("empty frame")
    kind = frame[0]
    if kind not in _KINDS:
        raise WireError(f"unknown frame kind {kind}")
    return kind


# --- interest ---------------------------------------------------------------------------


def encode_interest(kind: int, conversation_ids: Iterable[str]) -> bytes:
    if kind not in _INTEREST_KINDS:
        raise ValueError(f"not an interest kind: {kind}")
    return _encode_ids(kind, conversation_ids)


def decode_interest(frame: bytes) -> tuple[int, list[str]]:
    """(kind, conversation ids) of an interest frame."""
    kind = frame_kind(frame)
    if kind not in _INTEREST_KINDS:
        raise WireError(f"frame kind {kind} is not an interest announcement")
    return kind, _decode_ids(frame)


def encode_loss(conversation_ids: Iterable[str]) -> bytes:
    return _encode_ids(LOSS, conversation_ids)


def decode_loss(frame: bytes) -> list[str]:
    """The conversation ids of a loss notice."""
    if frame_kind(frame) != LOSS:
        raise WireError(f"frame kind {frame[0]} is not a loss notice")
    return _decode_ids(frame)


def _encode_ids(kind: int, conversation_ids: Iterable[str]) -> bytes:
    parts = [bytes((kind,))]
    for conversation_id in conversation_ids:
        raw = conversation_id.encode()
        if len(raw) > ID_BYTES_MAX:
            raise ValueError("conversation id longer than 65535 bytes")
        parts.append(_ID_LENGTH.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def _decode_ids(frame: bytes) -> list[str]:
    ids: list[str] = []
    offset, end = 1, len(frame)
    while offset < end:
        if end - offset < _ID_LENGTH.size:
            raise WireError(f"truncated id length at byte {offset}")
        (size,) = _ID_LENGTH.unpack_from(frame, offset)
        offset += _ID_LENGTH.size
        ids.append(_text(frame, offset, size))
        offset += size
    return ids


# --- events -----------------------------------------------------------------------------


def event_record(event: StreamEvent) -> bytes:
    """One event's record; records concatenate into an events frame body."""
    raw_id = event.conversation_id.encode()
    if len(raw_id) > ID_BYTES_MAX:
        raise ValueError("conversation id longer than 65535 bytes")
    if event.seq is None:
        header = _RECORD.pack(len(raw_id), _TOMBSTONE, 0, len(event.payload))
    else:
        header = _RECORD.pack(len(raw_id), _MESSAGE, event.seq, len(event.payload))
    return b"".join((header, raw_id, event.payload))


def encode_events(records: Iterable[bytes]) -> bytes:
    """An events frame of records from ``event_record``."""
    return b"".join((bytes((EVENTS,)), *records))


def decode_events(frame: bytes) -> list[StreamEvent]:
    """The events of an events frame, in order."""
    kind = frame_kind(frame)
    if kind != EVENTS:
        raise WireError(f"frame kind {kind} is not an events frame")
    events: list[StreamEvent] = []
    offset, end = 1, len(frame)
    record_size = _RECORD.size
    while offset < end:
        if end - offset < record_size:
            raise WireError(f"truncated record header at byte {offset}")
        id_size, event_kind, seq, payload_size = _RECORD.unpack_from(frame, offset)
        offset += record_size
        conversation_id = _text(frame, offset, id_size)
        offset += id_size
        if end - offset < payload_size:
            raise WireError(f"payload at byte {offset} claims {payload_size} bytes past the end")
        payload = frame[offset : offset + payload_size]
        offset += payload_size
        if not conversation_id:
            raise WireError("empty conversation id")
        if event_kind == _MESSAGE:
            if seq < 1:
                raise WireError(f"message event with seq {seq}")
            events.append(
                StreamEvent(
                    conversation_id=conversation_id, kind="message", seq=seq, payload=payload
                )
            )
        elif event_kind == _TOMBSTONE:
            events.append(
                StreamEvent(
                    conversation_id=conversation_id, kind="tombstone", seq=None, payload=payload
                )
            )
        else:
            raise WireError(f"unknown event kind {event_kind}")
    return events


def _text(frame: bytes, offset: int, size: int) -> str:
    if len(frame) - offset < size:
        raise WireError(f"id at byte {offset} claims {size} bytes past the end")
    try:
        return frame[offset : offset + size].decode()
    except UnicodeDecodeError as exc:
        raise WireError(f"conversation id is not utf-8: {exc.reason}") from None
