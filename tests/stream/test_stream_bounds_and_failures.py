"""Replay within the send queue's bound, a join that crashes, a loss signal
from the pub/sub adapter, and heartbeats that do not wait behind a replay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from phoenix_client import PhoenixClient
from test_stream_channels import TOPIC, append, create

from fastpaca.app import BUS_KEY, RUNTIME_KEY

Connect = Callable[..., Any]


async def test_an_unexpected_error_in_a_join_is_answered_and_unsubscribes(
    node: TestClient, connect: Connect, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    await create(node)
    runtime = node.app[RUNTIME_KEY]
    real_get = runtime.get
    calls = 0

    async def broken_get(conversation_id: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return await real_get(conversation_id)

    monkeypatch.setattr(runtime, "get", broken_get)
    client: PhoenixClient = await connect()
    _, reply = await client.join(TOPIC)
    assert reply.payload["status"] == "error"
    assert reply.payload["response"]["reason"] == "internal"
    assert "a bug" not in reply.payload["response"]["message"]  # no internals leak
    assert not node.app[BUS_KEY].has_subscribers("c1")
    assert any(record.exc_info for record in caplog.records if "join crashed" in record.message)
    # The client's retry succeeds on the same socket.
    _, again = await client.join(TOPIC)
    assert again.payload["status"] == "ok"
    seq = await append(node, "after")
    [push] = await client.pushes(1)
    assert push.payload["seq"] == seq
