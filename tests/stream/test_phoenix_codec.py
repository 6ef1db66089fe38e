"""The Phoenix frame codec on its own: exact bytes of both serializers."""

from __future__ import annotations

import pytest

from fastpaca.web.phoenix import V1, V2, FrameError, serializer_for


def test_serializer_by_vsn() -> None:
    assert serializer_for("2.0.0") is V2
    assert serializer_for("2.1.0") is V2
    assert serializer_for("1.0.0") is V1
    assert serializer_for(None) is V1  # as the Elixir server reads a missing vsn
    assert serializer_for("3.0.0") is None
    assert serializer_for("") is None


def test_v2_frames() -> None:
    frame = V2.decode('["7","8","conversation:a","phx_join",{"from_seq":3}]')
    assert (frame.join_ref, frame.ref, frame.topic, frame.event, frame.payload) == (
        "7", "8", "conversation:a", "phx_join", {"from_seq": 3},
    )  # fmt: skip
    assert V2.reply("7", "8", "conversation:a", "ok", b"{}") == (
        b'["7","8","conversation:a","phx_reply",{"status":"ok","response":{}}]'
    )
    head = V2.push_head("7", "conversation:a")
    assert V2.push(head, "message", b'{"seq":1}') == (
        b'["7",null,"conversation:a","message",{"seq":1}]'
    )
    assert V2.push(V2.push_head(None, "t"), "gap", b"{}") == b'[null,null,"t","gap",{}]'


def test_v1_frames() -> None:
    frame = V1.decode('{"topic":"t","event":"heartbeat","payload":{},"ref":"3"}')
    assert (frame.join_ref, frame.ref, frame.topic, frame.event) == (None, "3", "t", "heartbeat")
    assert V1.reply(None, "3", "phoenix", "ok", b"{}") == (
        b'{"topic":"phoenix","event":"phx_reply","ref":"3","join_ref":null,'
        b'"payload":{"status":"ok","response":{}}}'
    )
    head = V1.push_head("2", "t")
    assert V1.push(head, "message", b'{"seq":1}') == (
        b'{"topic":"t","ref":null,"join_ref":"2","event":"message","payload":{"seq":1}}'
    )


def test_refs_are_echoed_as_received() -> None:
    assert V2.decode('[5, 6, "t", "e", {}]').ref == 6  # echoed as a number, not "6"
    assert V2.reply(5, 6, "t", "ok", b"{}").startswith(b'[5,6,"t"')


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("nope", "not valid JSON"),
        ('["1","1","t","e"]', "JSON array"),
        ('[true,"1","t","e",{}]', "join_ref"),
        ('[null,1.5,"t","e",{}]', "ref"),
        ('[null,"1","","e",{}]', "topic"),
        ('[null,"1","t",7,{}]', "event"),
        ('[null,"1","t","e",null]', "payload"),
    ],
)
def test_v2_refusals_say_what_is_wrong(raw: str, reason: str) -> None:
    with pytest.raises(FrameError) as refused:
        V2.decode(raw)
    assert reason in refused.value.reason


def test_v1_refuses_arrays() -> None:
    with pytest.raises(FrameError):
        V1.decode('[null,"1","t","e",{}]')
