"""A Redis message whose event payload is not a JSON object is dropped and
counted, never spliced into websocket frames: the payload is pasted as is
into ``[join_ref, null, topic, "message", <payload>]``, and the JS client's
``JSON.parse`` of a broken frame throws (uncaught in Node). Anything that can
publish to the Redis server can reach these channels."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from test_redis_fanout import Pair, appended, pair, until, until_subscribed  # noqa: F401

from fastpaca.pubsub import wire
from fastpaca.pubsub.bus import StreamEvent
from fastpaca.pubsub.redis_adapter import channel_of, decode_message, encode_message
from tests.support.redis_server import RedisServer


def _event(payload: bytes) -> StreamEvent:
    return StreamEvent(conversation_id="c1", kind="message", seq=1, payload=payload)


@pytest.mark.parametrize("payload", [b"", b"not json", b'{"type":"message"', b"[1]", b"7"])
def test_a_payload_that_is_not_a_json_object_is_malformed(payload: bytes) -> None:
    with pytest.raises(wire.WireError, match="payload"):
        decode_message(channel_of("c1"), encode_message("x", _event(payload)))


async def test_a_broken_payload_never_reaches_a_subscriber(
    pair: Pair,  # noqa: F811
    redis_server: RedisServer,
) -> None:
    pair.watch("b", "c1")
    await until_subscribed(redis_server, "c1", 1)
    client = aioredis.Redis(port=redis_server.port)
    try:
        await client.publish(channel_of("c1"), encode_message("x", _event(b'{"type":')))
    finally:
        await client.aclose()
    await until(lambda: pair.fanouts["b"].stats.malformed_frames == 1)
    pair.apply([appended("c1", 1)])
    await until(lambda: pair.seqs("b") == [1])
    assert pair.got["b"][0].payload.startswith(b'{"type":"message","seq":1,')
