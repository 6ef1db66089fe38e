"""The websocket stream against a real in-process node: joins, live pushes,
replay hand-over, gaps, refusals (DESIGN section 2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient
from phoenix_client import PhoenixClient

TOPIC = "conversation:c1"


async def create(node: TestClient, conversation_id: str = "c1") -> None:
    response = await node.put(f"/v1/conversations/{conversation_id}", json={})
    assert response.status in (200, 201)


async def append(node: TestClient, text: str, conversation_id: str = "c1") -> int:
    body = {"message": {"role": "user", "parts": [{"type": "text", "text": text}]}}
    response = await node.post(f"/v1/conversations/{conversation_id}/messages", json=body)
    assert response.status == 201, await response.text()
    seq: int = (await response.json())["seq"]
    return seq


async def test_join_then_live_message_push_v2(
    node: TestClient, connect: Callable[..., Any]
) -> None:
    await create(node)
    client: PhoenixClient = await connect()
    join_ref, reply = await client.join(TOPIC)
    assert reply.join_ref == join_ref
    assert reply.payload == {
        "status": "ok",
        "response": {"last_seq": 0, "version": 0, "tombstoned": False},
    }
    seq = await append(node, "hello")
    [push] = await client.pushes(1)
    assert (push.join_ref, push.ref, push.topic, push.event) == (join_ref, None, TOPIC, "message")
    assert push.payload["type"] == "message"
    assert (push.payload["seq"], push.payload["version"]) == (seq, 1)
    message = push.payload["message"]
    assert message["role"] == "user"
    assert message["parts"] == [{"type": "text", "text": "hello"}]
    assert message["token_count"] == 1
