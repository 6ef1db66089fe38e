"""Replay within the send queue's bound, a join that crashes, a loss signal
from the pub/sub adapter, and heartbeats that do not wait behind a replay."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from phoenix_client import PhoenixClient
from test_stream_channels import TOPIC, append, collect_through, create, seqs

from fastpaca.app import BUS_KEY, RUNTIME_KEY
from fastpaca.web.socket import STREAMS_KEY, StreamLimits

Connect = Callable[..., Any]


async def append_padded(node: TestClient, count: int, pad: int, per_request: int) -> None:
    """``count`` messages of about ``pad`` bytes each, ``per_request`` per batch."""
    for start in range(0, count, per_request):
        body = {
            "messages": [
                {"role": "user", "parts": [{"type": "text", "text": f"{i}:" + "x" * pad}]}
                for i in range(start, min(count, start + per_request))
            ]
        }
        response = await node.post("/v1/conversations/c1/messages", json=body)
        assert response.status == 201, await response.text()


async def test_replay_of_large_messages_stays_within_the_send_queue_bound(
    node: TestClient, connect: Connect
) -> None:
    await create(node)
    await append_padded(node, 40, 30_000, per_request=20)  # 1.2 MB to replay
    soft = 64 * 1024
    streams = node.app[STREAMS_KEY]
    streams.limits = StreamLimits(send_queue_bytes=soft, send_queue_hard_bytes=64 << 20)
    client: PhoenixClient = await connect()
    _, reply = await client.join(TOPIC, {"from_seq": 1})
    assert reply.payload["status"] == "ok"
    frames = await collect_through(client, 40)
    assert seqs(frames) == list(range(1, 41))
    # Past the soft bound by at most one message (and a reply or two).
    assert streams.stats.queued_bytes_peak <= soft + 32_000, streams.stats.queued_bytes_peak


async def test_replay_pages_are_sized_in_bytes(
    node: TestClient, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create(node)
    await append_padded(node, 30, 20_000, per_request=30)
    streams = node.app[STREAMS_KEY]
    streams.limits = StreamLimits(replay_page_bytes=50_000, replay_first_page=4)
    runtime = node.app[RUNTIME_KEY]
    real_replay = runtime.replay
    limits: list[int] = []

    async def recording_replay(conversation_id: str, *, from_seq: int, limit: int) -> Any:
        limits.append(limit)
        return await real_replay(conversation_id, from_seq=from_seq, limit=limit)

    monkeypatch.setattr(runtime, "replay", recording_replay)
    client: PhoenixClient = await connect()
    await client.join(TOPIC, {"from_seq": 1})
    frames = await collect_through(client, 30)
    assert seqs(frames) == list(range(1, 31))
    assert limits[0] == 4 and max(limits[1:]) == 2, limits  # 50 kB / ~20 kB per message


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


async def test_a_loss_signal_becomes_a_gap_when_the_conversation_moved(
    node: TestClient, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create(node)
    client: PhoenixClient = await connect()
    join_ref, _ = await client.join(TOPIC)
    bus = node.app[BUS_KEY]
    # Nothing changed yet: a loss signal pushes nothing.
    assert bus.signal_loss("c1") == 1
    assert await client.barrier() == []
    # Two events never arrive (as while Redis was away), nothing shows a hole...
    real_publish = bus.publish
    monkeypatch.setattr(bus, "publish", lambda event: 0)
    await append(node, "lost 1")
    await append(node, "lost 2")
    monkeypatch.setattr(bus, "publish", real_publish)
    assert await client.barrier() == []
    # ...until the adapter says events may have been lost.
    bus.signal_loss("c1")
    [gap] = await client.pushes(1)
    assert (gap.join_ref, gap.event, gap.payload) == (
        join_ref,
        "gap",
        {"type": "gap", "expected": 1, "actual": 3},
    )
    seq = await append(node, "live again")
    [push] = await client.pushes(1)
    assert (push.event, push.payload["seq"]) == ("message", seq)
    assert await client.barrier() == []


async def test_a_loss_signal_during_a_join_re_reads_the_store(
    node: TestClient, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events lost between the join's read and going live are read, not gapped."""
    await create(node)
    await append(node, "before")
    runtime = node.app[RUNTIME_KEY]
    bus = node.app[BUS_KEY]
    real_get = runtime.get
    real_publish = bus.publish

    async def get_then_lose(conversation_id: str) -> Any:
        view = await real_get(conversation_id)
        monkeypatch.setattr(bus, "publish", lambda event: 0)
        await append(node, "lost")
        monkeypatch.setattr(bus, "publish", real_publish)
        bus.signal_loss(conversation_id)
        return view

    monkeypatch.setattr(runtime, "get", get_then_lose)
    client: PhoenixClient = await connect()
    _, reply = await client.join(TOPIC)
    assert reply.payload["response"]["last_seq"] == 1
    [push] = await client.pushes(1)
    assert (push.event, push.payload["seq"]) == ("message", 2)
    assert await client.barrier() == []


async def test_a_heartbeat_reply_does_not_wait_behind_a_queued_replay(
    node: TestClient, connect: Connect
) -> None:
    await create(node)
    count = 2_000
    await append_padded(node, count, 10_000, per_request=90)  # 20 MB: more than socket buffers
    streams = node.app[STREAMS_KEY]
    streams.limits = StreamLimits(
        send_queue_bytes=64 << 20,
        send_queue_hard_bytes=128 << 20,
        replay_page=count,
        replay_first_page=count,
        replay_page_bytes=64 << 20,
    )
    client: PhoenixClient = await connect()
    await client.join(TOPIC, {"from_seq": 1})
    async with asyncio.timeout(10):  # the whole replay is queued (nothing read yet)
        while streams.stats.queued_bytes_peak < 15_000_000:
            await asyncio.sleep(0.01)
    ref = client.next_ref()
    await client.send(None, ref, "phoenix", "heartbeat", {})
    before = 0
    async with asyncio.timeout(20):
        while True:
            frame = await client.recv()
            if frame.event == "phx_reply" and frame.ref == ref:
                break
            before += 1
    assert before < count, "the heartbeat reply waited behind the whole replay"
    frames = await collect_through(client, count)
    assert seqs(frames) == list(range(before + 1, count + 1))  # pushes still in order
