"""``from_seq: 0`` is a valid join param (an integer >= 0) and means the
whole history: on a conversation with no messages yet the first live message
must arrive as is, not behind a gap claiming a seq 0 was missed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient
from phoenix_client import PhoenixClient
from test_stream_channels import TOPIC, append, create

Connect = Callable[..., Any]


async def test_from_seq_zero_on_an_empty_conversation_has_no_gap(
    node: TestClient, connect: Connect
) -> None:
    await create(node)
    client: PhoenixClient = await connect()
    await client.join(TOPIC, {"from_seq": 0})
    seq = await append(node, "first")
    [push] = await client.pushes(1)
    assert (push.event, push.payload["seq"]) == ("message", seq), push
    assert await client.barrier() == []
