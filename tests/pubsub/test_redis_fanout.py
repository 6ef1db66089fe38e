"""The Redis adapter against a real redis-server: leader-only publishing,
no echo to the leader, interest following, malformed messages, and Redis
going away and coming back without blocking the apply path."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from fastpaca.app import NODE_KEY, create_app
from fastpaca.config import Settings
from fastpaca.pubsub import wire
from fastpaca.pubsub.bus import LocalBus, StreamEvent
from fastpaca.pubsub.redis_adapter import RedisFanout, channel_of, decode_message, encode_message
from fastpaca.raft.driver import DriverConfig
from fastpaca.store.effects import Appended
from tests.support.redis_server import RedisServer

STORED = b'{"role":"user","parts":[],"metadata":{},"token_count":0}'


def appended(cid: str, seq: int) -> Appended:
    return Appended(conversation_id=cid, seq=seq, version=seq, message=STORED)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def subscribers(server: RedisServer, cid: str) -> int:
    client = aioredis.Redis(port=server.port)
    try:
        counts = await client.pubsub_numsub(channel_of(cid))
        return int(counts[0][1])
    finally:
        await client.aclose()


async def until_subscribed(server: RedisServer, cid: str, count: int) -> None:
    async with asyncio.timeout(10):
        while await subscribers(server, cid) != count:
            await asyncio.sleep(0.01)


class Pair:
    """Node a leads every group, node b leads none."""

    def __init__(self, server: RedisServer) -> None:
        self.buses = {"a": LocalBus(), "b": LocalBus()}
        self.fanouts = {
            name: RedisFanout(
                bus=self.buses[name],
                node_id=name,
                is_leader=lambda group_id, name=name: name == "a",
                host="127.0.0.1",
                port=server.port,
                command_timeout_s=0.5,
            )
            for name in ("a", "b")
        }
        self.got: dict[str, list[StreamEvent]] = {"a": [], "b": []}

    def watch(self, name: str, cid: str) -> Callable[[], None]:
        return self.buses[name].subscribe(cid, self.got[name].append).close

    def seqs(self, name: str) -> list[int | None]:
        return [event.seq for event in self.got[name]]

    def apply(self, effects: list[Appended]) -> None:
        for fanout in self.fanouts.values():
            fanout(0, effects)


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[Pair]:
    nodes = Pair(redis_server)
    for fanout in nodes.fanouts.values():
        await fanout.start()
    yield nodes
    for fanout in nodes.fanouts.values():
        await fanout.stop()


def test_message_round_trip_and_malformed_bodies() -> None:
    event = StreamEvent(conversation_id="c1", kind="message", seq=3, payload=b"{}")
    body = encode_message("n1@host", event)
    assert decode_message(channel_of("c1"), body) == ("n1@host", event)
    for bad in (b"", b"\x00", b"\x00\x05ab", b"\x00\x01\xff", b"\x00\x01a" + b"\x00\x01"):
        with pytest.raises(wire.WireError):
            decode_message(channel_of("c1"), bad)
    with pytest.raises(wire.WireError, match="another conversation"):
        decode_message(channel_of("c2"), body)


async def test_leader_publishes_once_to_every_node(pair: Pair, redis_server: RedisServer) -> None:
    pair.watch("a", "c1")
    pair.watch("b", "c1")
    await until_subscribed(redis_server, "c1", 2)
    pair.apply([appended("c1", seq) for seq in range(1, 51)])
    await until(lambda: len(pair.got["b"]) == 50)
    await asyncio.sleep(0.05)  # an echo to a, or a copy from b, would be here by now
    assert pair.seqs("a") == pair.seqs("b") == list(range(1, 51))
    a, b = pair.fanouts["a"].stats, pair.fanouts["b"].stats
    assert (a.events_published, a.events_forwarded, a.events_received) == (50, 50, 0)
    assert (b.events_published, b.events_forwarded, b.events_received) == (0, 0, 50)


async def test_interest_follows_local_subscribers(pair: Pair, redis_server: RedisServer) -> None:
    close = pair.watch("b", "c1")
    await until_subscribed(redis_server, "c1", 1)
    close()
    await until_subscribed(redis_server, "c1", 0)
    pair.watch("b", "c2")
    await until_subscribed(redis_server, "c2", 1)
    pair.apply([appended("c1", 1), appended("c2", 1)])
    await until(lambda: len(pair.got["b"]) == 1)
    assert pair.got["b"][0].conversation_id == "c2"


async def test_malformed_messages_are_counted_and_dropped(
    pair: Pair, redis_server: RedisServer
) -> None:
    pair.watch("b", "c1")
    await until_subscribed(redis_server, "c1", 1)
    client = aioredis.Redis(port=redis_server.port)
    try:
        await client.publish(channel_of("c1"), b"garbage")
        await client.publish(channel_of("c1"), encode_message("x", wire_event("c9")))
    finally:
        await client.aclose()
    await until(lambda: pair.fanouts["b"].stats.malformed_frames == 2)
    pair.apply([appended("c1", 1)])
    await until(lambda: pair.seqs("b") == [1])


def wire_event(cid: str) -> StreamEvent:
    return StreamEvent(conversation_id=cid, kind="message", seq=1, payload=b"{}")


async def test_losing_redis_never_blocks_and_recovers(
    pair: Pair, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastpaca.pubsub.redis_adapter")
    pair.watch("a", "c1")
    pair.watch("b", "c1")
    await until_subscribed(redis_server, "c1", 2)
    pair.apply([appended("c1", 1)])
    await until(lambda: pair.seqs("b") == [1])

    redis_server.kill()
    started = time.perf_counter()
    for seq in range(2, 102):
        pair.apply([appended("c1", seq)])
    assert time.perf_counter() - started < 0.5  # the apply path only queues
    assert pair.seqs("a")[-1] == 101  # the leader's own subscribers never need Redis
    await until(lambda: pair.fanouts["a"].stats.events_dropped > 0)
    await asyncio.sleep(1.0)  # several reconnect attempts (0.1, 0.2, 0.4 s apart)

    redis_server.start()  # same port, empty: b must subscribe again by itself
    await until_subscribed(
        redis_server,
        "c1",
        2,
    )
    pair.apply([appended("c1", 200)])
    await until(lambda: pair.seqs("b")[-1:] == [200], timeout_s=15)
    # What b missed shows as a hole in its seqs: the websocket's gap.
    assert pair.seqs("b")[0] == 1 and len(pair.seqs("b")) < 101
    # One warning per node when its subscription was lost and one line when
    # it came back, not one per reconnect attempt.
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    lost = [m for level, m in lines if level == "WARNING" and "subscription" in m]
    restored = [m for level, m in lines if level == "INFO" and "restored" in m]
    assert len(lost) == 2 and len(restored) == 2, lines


async def test_a_node_alone_publishes_locally_and_to_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = Settings(
        FASTPACA_RAFT_DATA_DIR=str(tmp_path / "data"),
        FASTPACA_RAFT_GROUPS=2,
        FASTPACA_PUBSUB_ADAPTER="redis",
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=redis_server.port,
    )
    app = create_app(settings, driver_config=DriverConfig(tick_interval_ms=10))
    watcher = aioredis.Redis(port=redis_server.port)
    pubsub = watcher.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel_of("solo"))
    async with TestServer(app, host="127.0.0.1") as server, TestClient(server) as client:
        node = app[NODE_KEY]
        got: list[StreamEvent] = []
        node.bus.subscribe("solo", got.append)
        await until_subscribed(redis_server, "solo", 2)  # the node's own and ours
        async with asyncio.timeout(10):
            while (await client.put("/v1/conversations/solo", json={})).status != 201:
                await asyncio.sleep(0.02)
        body = {"message": {"role": "user", "parts": [{"type": "text", "text": "hi"}]}}
        assert (await client.post("/v1/conversations/solo/messages", json=body)).status == 201
        async with asyncio.timeout(5):
            message = None
            while message is None:
                message = await pubsub.get_message(timeout=1.0)
        origin, event = decode_message(message["channel"], message["data"])
        assert (origin, event.seq) == (node.node_id, 1)
        await asyncio.sleep(0.05)  # the node's own echo from Redis would be here by now
        assert [e.seq for e in got] == [1]
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await watcher.aclose()
