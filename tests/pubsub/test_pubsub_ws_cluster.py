"""End to end across processes: websocket subscribers (Phoenix 2.0.0 frames)
on every node of a real 3-node ``fastpaca serve`` cluster see the appends
made through one node, in order, once, with no gap; with the cluster
adapter and with the Redis one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support.cluster_procs import LocalCluster, message, metric
from tests.support.redis_server import RedisServer

GROUPS = 4
COUNT = 60


@pytest.fixture(params=["cluster", "redis"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalCluster]:
    """The same cluster with each adapter (a throwaway redis-server for ``redis``)."""
    env = {"FASTPACA_PUBSUB_ADAPTER": request.param}
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        env |= {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(server.port)}
    local = LocalCluster(tmp_path, 3, groups=GROUPS, env=env)
    yield local
    local.stop_all()


async def leaders_settled(session: aiohttp.ClientSession, urls: list[str]) -> None:
    """Every group led, and the same count per node for 2 s: the coordinator
    balances leaderships after the bootstrap, and a transfer mid-test may
    legitimately cost a subscriber a gap (DESIGN section 5)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(30):
        seen: list[float] = []
        since = loop.time()
        while True:
            now = [await metric(session, url, "fastpaca_raft_leaders") for url in urls]
            if now != seen or sum(now) != GROUPS:
                seen, since = now, loop.time()
            elif loop.time() - since >= 2.0:
                return
            await asyncio.sleep(0.1)


async def join(
    session: aiohttp.ClientSession, url: str, cid: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(url.replace("http", "ws", 1) + "/socket/websocket?vsn=2.0.0")
    topic = f"conversation:{cid}"
    await ws.send_str(orjson.dumps(["1", "1", topic, "phx_join", {}]).decode())
    reply = orjson.loads((await ws.receive(timeout=5)).data)
    assert reply[:4] == ["1", "1", topic, "phx_reply"], reply
    assert reply[4]["status"] == "ok", reply
    return ws


async def pushes(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    """The next ``count`` pushes (any event but heartbeats' replies)."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        frame = orjson.loads((await ws.receive(timeout=10)).data)
        join_ref, ref, _topic, event, payload = frame
        assert ref is None and join_ref == "1", frame
        got.append({"event": event, **payload})
    return got


async def test_websocket_subscribers_on_every_node(cluster: LocalCluster) -> None:
    cluster.start_all()
    await cluster.wait_ready()
    urls = [node.url for node in cluster.nodes]
    cid = "ws-everywhere"
    async with aiohttp.ClientSession() as session:
        await leaders_settled(session, urls)
        async with session.put(f"{urls[0]}/v1/conversations/{cid}", json={}) as response:
            assert response.status == 201
        sockets = [await join(session, url, cid) for url in urls]
        writer = urls[1]
        for i in range(COUNT // 2):  # one at a time, then a burst
            async with session.post(
                f"{writer}/v1/conversations/{cid}/messages", json={"message": message(f"m{i}")}
            ) as response:
                assert response.status == 201
        burst = [
            session.post(
                f"{writer}/v1/conversations/{cid}/messages", json={"message": message(f"b{i}")}
            )
            for i in range(COUNT // 2)
        ]
        for response in await asyncio.gather(*burst):
            assert response.status == 201
            response.release()
        for url, ws in zip(urls, sockets, strict=True):
            got = await pushes(ws, COUNT)
            assert [p["event"] for p in got] == ["message"] * COUNT, (url, got[:3])
            assert [p["seq"] for p in got] == list(range(1, COUNT + 1)), url
            assert got[0]["message"]["parts"] == [{"type": "text", "text": "m0"}]
            await ws.close()
        received = [
            await metric(session, url, "fastpaca_pubsub_events_received_total") for url in urls
        ]
        published = [
            await metric(session, url, "fastpaca_pubsub_events_published_total") for url in urls
        ]
    # One node led the group and published to its own socket; the two others
    # got every event over the peer transport or through Redis (the leader
    # drops its own echo from Redis).
    assert sorted(published) == [0, 0, COUNT], published
    assert sorted(received) == [0, COUNT, COUNT], received
    # A graceful stop goes through the adapter's stop as well.
    for node in cluster.nodes:
        node.terminate()
    for node in cluster.nodes:
        assert node.wait_exit(15) == 0, node.log_text()[-3000:]
        assert "Traceback" not in node.log_text(), node.log_text()[-3000:]
