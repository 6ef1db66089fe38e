"""``phx_leave`` acts only on the channel instance it names (its join_ref),
as the Phoenix server does: a leave still carrying a replaced join's ref must
not close the channel that replaced it (PHOENIX_PROTOCOL.md sections 3, 7)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient
from phoenix_client import PhoenixClient
from test_stream_channels import TOPIC, append, create

from fastpaca.app import BUS_KEY

Connect = Callable[..., Any]


async def test_a_stale_leave_does_not_close_the_channel_that_replaced_it(
    node: TestClient, connect: Connect
) -> None:
    # The JS client sends this when code calls ``leave()`` on an old channel
    # object of a topic after a new object joined it (socket.js leaveOpenTopic
    # already left it once): the leave carries the old object's join_ref.
    await create(node)
    client: PhoenixClient = await connect()
    old, _ = await client.join(TOPIC)
    new = client.next_ref()
    await client.send(new, new, TOPIC, "phx_join", {})
    closed, reply = await client.pushes(2)
    assert (closed.event, reply.payload["status"]) == ("phx_close", "ok")

    _, leave_reply = await client.request(TOPIC, "phx_leave", {}, join_ref=old)
    assert leave_reply.payload["status"] == "ok"  # the old object forgets itself
    assert node.server.app[BUS_KEY].has_subscribers("c1")

    seq = await append(node, "still streamed")
    [push] = await client.pushes(1)
    assert (push.event, push.join_ref, push.payload["seq"]) == ("message", new, seq)


async def test_a_leave_with_the_current_join_ref_or_none_closes_the_channel(
    node: TestClient, connect: Connect
) -> None:
    await create(node)
    bus = node.server.app[BUS_KEY]
    client: PhoenixClient = await connect()
    join_ref, _ = await client.join(TOPIC)
    await client.request(TOPIC, "phx_leave", {}, join_ref=join_ref)
    assert not bus.has_subscribers("c1")
    # v1 clients send no join_ref: their leave names the topic's channel.
    v1: PhoenixClient = await connect(vsn="1.0.0")
    await v1.join(TOPIC)
    await v1.request(TOPIC, "phx_leave", {})
    assert not bus.has_subscribers("c1")
