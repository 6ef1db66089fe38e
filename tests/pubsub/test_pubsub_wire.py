"""The pub/sub frame layout: round trips and every way a frame can be malformed."""

from __future__ import annotations

import struct

import pytest

from fastpaca.pubsub import wire
from fastpaca.pubsub.bus import StreamEvent
from fastpaca.pubsub.publisher import TOMBSTONE_PAYLOAD


def message_event(cid: str, seq: int, text: str = "hi") -> StreamEvent:
    payload = b'{"type":"message","seq":%d,"version":%d,"message":{"text":"%b"}}' % (
        seq,
        seq,
        text.encode(),
    )
    return StreamEvent(conversation_id=cid, kind="message", seq=seq, payload=payload)


def test_events_round_trip_in_order_with_tombstones_and_unicode_ids() -> None:
    events = [
        message_event("c1", 1),
        message_event("naïve/会話", 2**40, "x" * 3000),
        StreamEvent(conversation_id="c1", kind="tombstone", seq=None, payload=TOMBSTONE_PAYLOAD),
        message_event("c2", 7, ""),
    ]
    frame = wire.encode_events(wire.event_record(event) for event in events)
    assert wire.frame_kind(frame) == wire.EVENTS
    assert wire.decode_events(frame) == events
    assert wire.decode_events(wire.encode_events([])) == []


@pytest.mark.parametrize("kind", [wire.INTEREST_FULL, wire.INTEREST_ADD, wire.INTEREST_REMOVE])
def test_interest_round_trip(kind: int) -> None:
    ids = ["a", "conversation:with:colons", "ü" * 100]
    assert wire.decode_interest(wire.encode_interest(kind, ids)) == (kind, ids)
    assert wire.decode_interest(wire.encode_interest(kind, [])) == (kind, [])


def test_encoding_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(ValueError):
        wire.encode_interest(wire.EVENTS, ["a"])
    with pytest.raises(ValueError):
        wire.encode_interest(wire.INTEREST_ADD, ["x" * 70_000])
    with pytest.raises(ValueError):
        wire.event_record(message_event("x" * 70_000, 1))


GOOD_EVENTS = wire.encode_events([wire.event_record(message_event("c1", 3))])
GOOD_INTEREST = wire.encode_interest(wire.INTEREST_ADD, ["c1", "c2"])


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "empty frame"),
        (b"\x09", "unknown frame kind 9"),
        (b"\x00abc", "unknown frame kind 0"),
        (GOOD_EVENTS[:-1], "past the end"),
        (GOOD_EVENTS[:5], "truncated record header"),
        (GOOD_EVENTS + b"\x00", "truncated record header"),
        (b"\x04" + struct.pack(">HBQI", 2, 0, 1, 0) + b"\xff\xfe", "not utf-8"),
        (b"\x04" + struct.pack(">HBQI", 0, 0, 1, 0), "empty conversation id"),
        (b"\x04" + struct.pack(">HBQI", 1, 0, 0, 0) + b"c", "message event with seq 0"),
        (b"\x04" + struct.pack(">HBQI", 1, 7, 1, 0) + b"c", "unknown event kind 7"),
        (b"\x04" + struct.pack(">HBQI", 50, 0, 1, 0) + b"c", "claims 50 bytes"),
        (GOOD_INTEREST[:-1], "past the end"),
        (GOOD_INTEREST + b"\x00", "truncated id length"),
        (b"\x02\x00\x02\xc3\x28", "not utf-8"),
    ],
)
def test_malformed_frames_raise_wire_error(frame: bytes, reason: str) -> None:
    with pytest.raises(wire.WireError, match=reason):
        kind = wire.frame_kind(frame)
        if kind == wire.EVENTS:
            wire.decode_events(frame)
        else:
            wire.decode_interest(frame)


def test_decoders_refuse_the_other_kind() -> None:
    with pytest.raises(wire.WireError, match="not an interest"):
        wire.decode_interest(GOOD_EVENTS)
    with pytest.raises(wire.WireError, match="not an events frame"):
        wire.decode_events(GOOD_INTEREST)
