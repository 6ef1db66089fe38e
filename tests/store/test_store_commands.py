"""The command codec round-trips every command and refuses malformed bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastpaca.raft.codec import CodecError
from fastpaca.store.commands import (
    AckArchived,
    AppendMessages,
    TombstoneConversation,
    UpsertConversation,
    decode_command,
    encode_command,
)
from fastpaca.store.messages import NewMessage, build_append, estimate_tokens

ids = st.text(min_size=1, max_size=20)


@given(
    cid=ids,
    bodies=st.lists(st.binary(max_size=50), min_size=1, max_size=5),
    key=st.none() | st.text(max_size=10),
    guard=st.none() | st.integers(0, 2**40),
    batch=st.booleans(),
)
def test_append_round_trips(
    cid: str, bodies: list[bytes], key: str | None, guard: int | None, batch: bool
) -> None:
    command = AppendMessages(
        conversation_id=cid,
        messages=tuple(bodies),
        token_counts=tuple(range(len(bodies))),
        request_digest=b"\x01" * 16,
        now_ms=123,
        is_batch=batch,
        if_version=guard,
        idempotency_key=key,
    )
    assert decode_command(_copy(encode_command(command))) == command  # parsed, as on a follower


def _copy(data: bytes) -> bytes:
    """The same bytes in another object (what a follower decodes off the wire)."""
    return bytes(bytearray(data))


def test_the_proposer_gets_its_own_command_back_without_parsing() -> None:
    command, _ = build_append("c", [_message()], now_ms=1, is_batch=False)
    data = encode_command(command)
    assert decode_command(data) is command  # the same bytes object: no parse
    assert decode_command(data) == command and decode_command(data) is not command  # once only
    assert decode_command(_copy(data)) == command


@pytest.mark.parametrize(
    "broken",
    [
        {"messages": ()},
        {"token_counts": (1, 2)},
        {"token_counts": (-1,)},
        {"if_version": -1},
        {"now_ms": -5},
    ],
)
def test_encoding_refuses_what_decoding_would_refuse(broken: dict[str, object]) -> None:
    """Else the proposer (which skips decoding) and the other replicas could disagree."""
    fields: dict[str, object] = {
        "conversation_id": "c",
        "messages": (b"{}",),
        "token_counts": (1,),
        "request_digest": b"",
        "now_ms": 1,
        **broken,
    }
    with pytest.raises(CodecError):
        encode_command(AppendMessages(**fields))  # type: ignore[arg-type]


def _message() -> NewMessage:
    return NewMessage(role="user", parts=[{"type": "text", "text": "hi"}], metadata={})


@pytest.mark.parametrize(
    "command",
    [
        UpsertConversation(conversation_id="c", metadata_json=b'{"a":[1,"\\u00e9"]}', now_ms=5),
        UpsertConversation(conversation_id="c", metadata_json=None, now_ms=5),
        TombstoneConversation(conversation_id="c é", now_ms=9),
        AckArchived(conversation_id="c", upto_seq=77),
    ],
)
def test_other_commands_round_trip(command: object) -> None:
    assert decode_command(encode_command(command)) == command  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data", [b"", b"A", b"X\x00\x00\x00\x02{}", b'T\x00\x00\x00\x09{"c":1}', b"U\x00\x00\x00\x02[]"]
)
def test_malformed_bytes_raise_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_command(data)


def test_truncated_append_is_refused() -> None:
    command, _ = build_append(
        "c",
        [NewMessage(role="user", parts=[{"type": "text", "text": "hello"}], metadata={})],
        now_ms=1,
        is_batch=False,
    )
    data = encode_command(command)
    with pytest.raises(CodecError):
        decode_command(data[:-2])


def test_prepared_message_is_canonical_and_timestamped() -> None:
    one = NewMessage(role="user", parts=[{"text": "hi", "type": "text"}], metadata={"b": 1, "a": 2})
    two = NewMessage(role="user", parts=[{"type": "text", "text": "hi"}], metadata={"a": 2, "b": 1})
    cmd_one, prepared_one = build_append("c", [one], now_ms=1_700_000_000_000, is_batch=False)
    cmd_two, _ = build_append("c", [two], now_ms=1_700_000_999_000, is_batch=False)
    # Key order and time do not change a message's identity.
    assert cmd_one.request_digest == cmd_two.request_digest
    assert prepared_one[0].stored.startswith(b'{"inserted_at":"2023-11-14T22:13:20Z",')
    assert (
        estimate_tokens([{"type": "text", "text": "abcdefgh"}, {"type": "image", "text": "zzzz"}])
        == 2
    )
