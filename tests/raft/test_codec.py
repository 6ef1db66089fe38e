"""Wire frames: exact round trips, heartbeat coalescing, and garbage that only
ever raises CodecError."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpaca.raft.codec import (
    CodecError,
    SnapshotChunk,
    SnapshotStatus,
    decode_conf_change,
    decode_frame,
    encode_conf_change,
    encode_frame,
)
from fastpaca.raft.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    SnapshotMeta,
)

_U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)

_entries = st.lists(
    st.builds(
        Entry,
        index=_U64,
        term=_U64,
        type=st.sampled_from(EntryType),
        data=st.binary(max_size=64),
    ),
    max_size=5,
).map(tuple)

_names = st.lists(st.text(min_size=1, max_size=8), max_size=4).map(tuple)
_snapshots = st.none() | st.builds(
    SnapshotMeta,
    index=_U64,
    term=_U64,
    conf_state=st.builds(ConfState, voters=_names, learners=_names),
)

_messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    group_id=st.integers(min_value=0, max_value=0xFFFF),
    sender=st.just("n1"),
    to=st.just("n2"),
    term=_U64,
    log_term=_U64,
    index=_U64,
    entries=_entries,
    commit=_U64,
    reject=st.booleans(),
    reject_hint=_U64,
    context=st.binary(max_size=32),
    snapshot=_snapshots,
)


def _sorted_by_kind(messages: list[Message]) -> list[Message]:
    """Frame order: non-coalesced messages as given, then heartbeats by type."""
    coalesced = [m for m in messages if _coalescable(m)]
    rest = [m for m in messages if not _coalescable(m)]
    types = list(dict.fromkeys(m.type for m in coalesced))
    return rest + [m for t in types for m in coalesced if m.type == t]


def _coalescable(m: Message) -> bool:
    return (
        m.type in (MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP)
        and not m.entries
        and m.index == m.log_term == m.reject_hint == 0
        and not m.reject
        and m.snapshot is None
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(_messages, max_size=6))
def test_any_messages_round_trip(messages: list[Message]) -> None:
    frame = decode_frame(encode_frame("n1", "n2", messages))
    assert (frame.sender, frame.to) == ("n1", "n2")
    assert frame.messages == _sorted_by_kind(messages)


def test_heartbeats_of_all_groups_are_coalesced_into_one_compact_record() -> None:
    heartbeats = [
        Message(
            type=MessageType.HEARTBEAT,
            group_id=g,
            sender="n1",
            to="n2",
            term=7,
            commit=g,
            context=b"r" if g == 3 else b"",
        )
        for g in range(256)
    ]
    append = Message(
        type=MessageType.APPEND,
        group_id=9,
        sender="n1",
        to="n2",
        term=7,
        entries=(Entry(index=1, term=7, data=b"x"),),
    )
    encoded = encode_frame("n1", "n2", [*heartbeats[:100], append, *heartbeats[100:]])
    decoded = decode_frame(encoded)
    assert decoded.messages == [append, *heartbeats]
    # 20 bytes per group: far below one full message record per group.
    assert len(encoded) < 256 * 21 + 200
    assert encoded.count(b"\x02\x07\x00\x00\x01\x00") == 1  # one HEARTBEATS record of 256


def test_heartbeat_with_extra_fields_is_sent_in_full() -> None:
    odd = Message(
        type=MessageType.HEARTBEAT_RESP, group_id=1, sender="a", to="b", term=2, reject=True
    )
    assert decode_frame(encode_frame("a", "b", [odd])).messages == [odd]


def test_snapshot_chunks_and_statuses_round_trip() -> None:
    chunks = [
        SnapshotChunk(group_id=4, term=3, snapshot_index=99, seq=0, is_last=False, data=b"a" * 10),
        SnapshotChunk(group_id=4, term=3, snapshot_index=99, seq=1, is_last=True, data=b""),
    ]
    statuses = [SnapshotStatus(group_id=5, snapshot_index=12, success=False)]
    frame = decode_frame(encode_frame("n3", "n1", [], chunks, statuses))
    assert (frame.chunks, frame.statuses, frame.messages) == (chunks, statuses, [])


def test_message_addressed_elsewhere_is_refused_at_encode() -> None:
    stray = Message(type=MessageType.VOTE, group_id=1, sender="n1", to="n3")
    with pytest.raises(ValueError, match="in frame"):
        encode_frame("n1", "n2", [stray])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        decode_frame(data)


def test_every_truncation_and_many_bit_flips_of_a_valid_frame_raise_only_codec_error() -> None:
    rng = random.Random(20261127)
    messages = [
        Message(
            type=MessageType.APPEND,
            group_id=1,
            sender="n1",
            to="n2",
            term=3,
            index=4,
            log_term=2,
            commit=4,
            entries=tuple(Entry(index=i, term=3, data=b"d" * i) for i in range(5, 9)),
        ),
        Message(
            type=MessageType.SNAPSHOT,
            group_id=2,
            sender="n1",
            to="n2",
            term=3,
            snapshot=SnapshotMeta(index=9, term=3, conf_state=ConfState(voters=("n1", "n2"))),
        ),
        Message(type=MessageType.HEARTBEAT, group_id=3, sender="n1", to="n2", term=3),
    ]
    chunk = SnapshotChunk(group_id=2, term=3, snapshot_index=9, seq=0, is_last=True, data=b"zz")
    valid = encode_frame("n1", "n2", messages, [chunk])
    truncated_failures = 0
    for cut in range(len(valid)):
        with pytest.raises(CodecError):
            decode_frame(valid[:cut])
        truncated_failures += 1
    assert truncated_failures == len(valid)
    for _ in range(3000):
        mutated = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        with contextlib.suppress(CodecError):
            decode_frame(bytes(mutated))


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x02\x01a\x01b", "version"),
        (b"\x01\x00\x01b\x00\x00\x00\x00", "empty node id"),
        (b"\x01\x01a\x01b\x00\x00\x00\x01\x09", "record kind"),
        (b"\x01\x01a\x01b\x00\x00\x00\x01\x02\x05\x00\x00\x00\x00", "heartbeat type"),
        (b"\x01\x01a\x01b\x00\x00\x00\x01\x04\x00\x01" + b"\x00" * 8 + b"\x02", "boolean"),
        (b"\x01\x01a\x01b\x00\x00\x00\x09\x04", "record count"),
        (b"\x01\x01a\x01b\x00\x00\x00\x00\x04", "trailing"),
    ],
)
def test_specific_malformations_are_named(frame: bytes, reason: str) -> None:
    with pytest.raises(CodecError, match=reason):
        decode_frame(frame)


def test_conf_change_payload_round_trip_and_garbage() -> None:
    cc = ConfChange(op=ConfChangeOp.ADD_LEARNER, node_id="n4")
    assert decode_conf_change(encode_conf_change(cc)) == cc
    for garbage in (b"", b"{", b'{"op": 9, "node": "x"}', b"[]"):
        with pytest.raises(CodecError):
            decode_conf_change(garbage)
