"""Redis mode: a join only succeeds once this node's SUBSCRIBE covering the
conversation is in force, and subscribers of an established subscription
are told of a possible loss after the subscriber connection came back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fastpaca.app import create_app
from fastpaca.config import Settings
from fastpaca.pubsub.bus import LocalBus
from fastpaca.pubsub.redis_adapter import RedisFanout
from fastpaca.raft.driver import DriverConfig
from fastpaca.web.socket import STREAMS_KEY, StreamLimits
from tests.pubsub.test_redis_fanout import subscribers, until, until_subscribed
from tests.support.redis_server import RedisServer


@pytest.fixture
async def fanout(redis_server: RedisServer) -> AsyncIterator[RedisFanout]:
    adapter = RedisFanout(
        bus=LocalBus(),
        node_id="b",
        is_leader=lambda group_id: False,
        host="127.0.0.1",
        port=redis_server.port,
        command_timeout_s=0.5,
    )
    await adapter.start()
    yield adapter
    await adapter.stop()


async def test_ready_only_once_the_subscribe_is_acknowledged(
    fanout: RedisFanout, redis_server: RedisServer
) -> None:
    bus: LocalBus = fanout._bus
    redis_server.kill()
    bus.subscribe("c1", lambda event: None)
    assert await bus.wait_ready("c1", 0.3) is False  # Redis is away: not ready
    redis_server.start()
    assert await bus.wait_ready("c1", 10.0) is True
    assert await subscribers(redis_server, "c1") == 1  # in force when we were told
    assert await bus.wait_ready("c1", 0.0) is True  # and stays ready at once


async def test_a_lost_subscriber_connection_signals_loss_after_resubscribing(
    fanout: RedisFanout, redis_server: RedisServer
) -> None:
    bus: LocalBus = fanout._bus
    losses: list[int] = []
    watched = bus.subscribe("c1", lambda event: None, on_loss=lambda: losses.append(1))
    bus.subscribe("c2", lambda event: None, on_loss=lambda: losses.append(2))
    assert await bus.wait_ready("c1", 10.0)
    assert await bus.wait_ready("c2", 10.0)
    assert losses == []
    watched.close()  # c1 is no longer watched: nobody to tell about it
    await until_subscribed(redis_server, "c1", 0)

    redis_server.kill()
    redis_server.start()
    await until(lambda: losses == [2], timeout_s=15)
    assert await bus.wait_ready("c2", 0.0)
    assert fanout.stats.loss_signals == 1


@pytest.fixture
async def redis_node(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[TestClient]:
    settings = Settings(
        FASTPACA_RAFT_DATA_DIR=str(tmp_path / "data"),
        FASTPACA_RAFT_GROUPS=2,
        FASTPACA_PUBSUB_ADAPTER="redis",
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=redis_server.port,
    )
    app = create_app(settings, driver_config=DriverConfig(tick_interval_ms=10))
    async with TestServer(app, host="127.0.0.1") as server, TestClient(server) as client:
        async with asyncio.timeout(10):
            while (await client.put("/v1/conversations/c1", json={})).status not in (200, 201):
                await asyncio.sleep(0.02)
        app[STREAMS_KEY].limits = StreamLimits(join_ready_timeout_s=0.3)
        yield client


async def _join(ws: aiohttp.ClientWebSocketResponse, ref: str) -> dict[str, object]:
    await ws.send_str(orjson.dumps([ref, ref, "conversation:c1", "phx_join", {}]).decode())
    reply = orjson.loads(await ws.receive_str(timeout=5))
    assert reply[1] == ref and reply[3] == "phx_reply", reply
    payload: dict[str, object] = reply[4]
    return payload


async def test_a_join_while_redis_is_away_answers_unavailable(
    redis_node: TestClient, redis_server: RedisServer
) -> None:
    redis_server.kill()
    ws = await redis_node.ws_connect("/socket/websocket?vsn=2.0.0")
    refused = await _join(ws, "1")
    assert refused["status"] == "error"
    assert refused["response"]["reason"] == "unavailable"  # type: ignore[index]

    redis_server.start()  # the JS client retries the join by itself
    async with asyncio.timeout(15):
        ref = 2
        while (joined := await _join(ws, str(ref)))["status"] != "ok":
            ref += 1
            await asyncio.sleep(0.1)
    assert joined["response"] == {"last_seq": 0, "version": 0, "tombstoned": False}
    assert await subscribers(redis_server, "c1") == 1
    await ws.close()
