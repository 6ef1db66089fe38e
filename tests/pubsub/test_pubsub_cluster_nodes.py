"""Four real nodes in one process (real sockets, peer transport, LevelDB):
stream events reach subscribers on every node, whichever nodes host the
conversation's group; withdrawn interest stops the leader; a dropped peer
link re-announces interest when it comes back, and a websocket channel whose
events were lost while that link was down gets a ``gap`` without waiting for
the next event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from fastpaca.app import NODE_KEY, Node, create_app
from fastpaca.cluster.peer_link import CLOSE_GOING_AWAY
from fastpaca.cluster.placement import group_for_conversation
from fastpaca.config import Settings
from fastpaca.pubsub.bus import StreamEvent
from fastpaca.pubsub.cluster_adapter import ClusterFanout
from tests.stream.phoenix_client import PhoenixClient
from tests.support.cluster_procs import metric
from tests.support.ports import free_port

GROUPS = 4
SECRET = "pubsub-test-secret"


@dataclass
class RunningNode:
    name: str
    url: str
    runner: web.AppRunner
    node: Node
    got: dict[str, list[StreamEvent]] = field(default_factory=dict)

    @property
    def fanout(self) -> ClusterFanout:
        assert isinstance(self.node.pubsub, ClusterFanout)
        return self.node.pubsub

    def watch(self, cid: str) -> Callable[[], None]:
        events = self.got.setdefault(cid, [])
        return self.node.bus.subscribe(cid, events.append).close

    def seqs(self, cid: str) -> list[int | None]:
        return [event.seq for event in self.got.get(cid, [])]


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[list[RunningNode]]:
    ports = [free_port() for _ in range(4)]
    entries = [f"n{i + 1}@127.0.0.1:{port}" for i, port in enumerate(ports)]
    running: list[RunningNode] = []
    try:
        for entry, port in zip(entries, ports, strict=True):
            settings = Settings(
                NODE_NAME=entry,
                CLUSTER_NODES=",".join(entries),
                FASTPACA_CLUSTER_SECRET=SECRET,
                FASTPACA_RAFT_GROUPS=GROUPS,
                FASTPACA_RAFT_DATA_DIR=tmp_path / entry.split("@")[0],
                PORT=port,
                FASTPACA_BIND="127.0.0.1",
            )
            app = create_app(settings)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            running.append(
                RunningNode(entry.split("@")[0], f"http://127.0.0.1:{port}", runner, app[NODE_KEY])
            )
        await until(lambda: all(n.node.readiness.report().is_ready for n in running), 30.0)
        await leaders_settled(running)
        yield running
    finally:
        await asyncio.gather(*(stop(node) for node in running))
        for node in running:
            await node.runner.cleanup()


async def leaders_settled(nodes: list[RunningNode], quiet_s: float = 2.0) -> None:
    """The coordinator moves leaderships after the bootstrap until they are
    balanced (rounds every 0.5 s, 1.2 s cool-down), and a transfer in the
    middle of a test may legitimately duplicate an event. Wait until every
    group has had the same leader for ``quiet_s``."""

    def leaders() -> tuple[str | None, ...]:
        return tuple(
            next((n.name for n in nodes if n.node.driver.is_leader(g)), None) for g in range(GROUPS)
        )

    loop = asyncio.get_running_loop()
    async with asyncio.timeout(30.0):
        seen, since = leaders(), loop.time()
        while None in seen or loop.time() - since < quiet_s:
            await asyncio.sleep(0.05)
            now = leaders()
            if now != seen:
                seen, since = now, loop.time()


async def stop(node: RunningNode) -> None:
    """Like ``serve``'s shutdown but all nodes at once and without handing
    leaderships over (nobody would take them): aiohttp's cleanup alone stops
    reading the peer links first and waits out every transfer."""
    cluster = node.node.cluster
    assert cluster is not None and node.node.pubsub is not None
    await cluster.stop_planning()
    await node.node.driver.stop(transfer_leadership=False)
    await node.node.pubsub.stop()
    await cluster.stop()
    await cluster.transport.stop()


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


def leader_of(nodes: list[RunningNode], cid: str) -> RunningNode:
    group = group_for_conversation(cid, GROUPS)
    (leader,) = [n for n in nodes if n.node.driver.is_leader(group)]
    return leader


async def append(session: aiohttp.ClientSession, url: str, cid: str, text: str) -> int:
    body = {"message": {"role": "user", "parts": [{"type": "text", "text": text}]}}
    async with session.post(f"{url}/v1/conversations/{cid}/messages", json=body) as response:
        assert response.status == 201, await response.text()
        seq: int = (await response.json())["seq"]
        return seq


async def test_every_node_streams_every_conversation_in_order(nodes: list[RunningNode]) -> None:
    cid = "stream-everywhere"
    group = group_for_conversation(cid, GROUPS)
    outsiders = [n for n in nodes if group not in n.node.driver.group_ids()]
    assert len(outsiders) == 1, "4 nodes, 3 replicas: one node does not host the group"
    leader = leader_of(nodes, cid)
    writer = next(n for n in nodes if n is not leader and n not in outsiders)
    for node in nodes:
        node.watch(cid)
    await until(
        lambda: (
            leader.fanout.interested_peers(cid)
            == {n.node.node_id for n in nodes} - {leader.node.node_id}
        )
    )
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{writer.url}/v1/conversations/{cid}", json={}) as response:
            assert response.status == 201
        acknowledged = [await append(session, writer.url, cid, f"m{i}") for i in range(20)]
        # Concurrent appends through every node: one order, seen the same everywhere.
        acknowledged += await asyncio.gather(
            *(append(session, n.url, cid, f"c{i}") for i, n in enumerate(nodes * 5))
        )
    assert sorted(acknowledged) == list(range(1, 41))
    await until(lambda: all(len(n.got[cid]) >= 40 for n in nodes))
    await asyncio.sleep(0.05)  # a duplicate would arrive about now
    for node in nodes:
        assert node.seqs(cid) == list(range(1, 41)), node.name
        payload = orjson.loads(node.got[cid][0].payload)
        assert payload["type"] == "message" and payload["seq"] == 1
        assert payload["message"]["parts"] == [{"type": "text", "text": "m0"}]
    assert leader.fanout.stats.events_published == 40
    assert leader.fanout.stats.events_forwarded == 3 * 40
    for node in nodes:
        if node is not leader:
            assert node.fanout.stats.events_received == 40
            assert node.fanout.stats.events_published == 0  # followers never publish
    async with aiohttp.ClientSession() as session, session.get(leader.url + "/metrics") as response:
        text = await response.text()
    assert "fastpaca_pubsub_events_forwarded_total 120.0" in text


async def test_withdrawn_interest_and_a_restarted_link(nodes: list[RunningNode]) -> None:
    cid = "stream-interest"
    leader = leader_of(nodes, cid)
    watcher = next(n for n in nodes if n is not leader)
    close = watcher.watch(cid)
    await until(lambda: watcher.node.node_id in leader.fanout.interested_peers(cid))
    async with aiohttp.ClientSession() as session:
        await session.put(f"{leader.url}/v1/conversations/{cid}", json={})
        await append(session, leader.url, cid, "one")
        await until(lambda: watcher.seqs(cid) == [1])

        # The link between the two drops; the watcher's interest is forgotten,
        # then announced again when the transport reconnects.
        link = leader.node.cluster.transport._links[watcher.node.node_id]  # type: ignore[union-attr]
        received_before = leader.fanout.stats.interest_frames_received
        await link.close(CLOSE_GOING_AWAY)
        await until(lambda: leader.fanout.stats.interest_frames_received > received_before)
        await until(lambda: watcher.node.node_id in leader.fanout.interested_peers(cid))
        await append(session, leader.url, cid, "two")
        await until(lambda: watcher.seqs(cid) == [1, 2])

        # The watcher leaves: the leader stops sending to it.
        close()
        await until(lambda: not leader.fanout.interested_peers(cid))
        forwarded = leader.fanout.stats.events_forwarded
        await append(session, leader.url, cid, "three")
        await asyncio.sleep(0.05)
        assert leader.fanout.stats.events_forwarded == forwarded
        assert watcher.seqs(cid) == [1, 2]


async def test_a_channel_gets_a_gap_for_events_lost_while_the_link_was_down(
    nodes: list[RunningNode],
) -> None:
    cid = "stream-loss"
    group = group_for_conversation(cid, GROUPS)
    leader = leader_of(nodes, cid)
    # The node without a replica of the group: it knows the leader only from
    # the statuses, and cutting its link to the leader leaves the group's
    # Raft traffic alone.
    (outsider,) = [n for n in nodes if group not in n.node.driver.group_ids()]
    outsider_id, leader_id = outsider.node.node_id, leader.node.node_id
    assert outsider.node.cluster is not None and leader.node.cluster is not None
    outsider_transport = outsider.node.cluster.transport
    leader_transport = leader.node.cluster.transport
    async with aiohttp.ClientSession() as session:
        await session.put(f"{leader.url}/v1/conversations/{cid}", json={})
        await append(session, leader.url, cid, "one")
        ws = await session.ws_connect(
            outsider.url.replace("http", "ws", 1) + "/socket/websocket?vsn=2.0.0"
        )
        client = PhoenixClient(ws)
        _, reply = await client.join(f"conversation:{cid}")
        assert reply.payload["response"]["last_seq"] == 1
        await until(lambda: outsider_id in leader.fanout.interested_peers(cid))

        # Cut the link both ways and keep it cut: neither end dials the other.
        outsider_peers, leader_peers = outsider_transport.peers(), leader_transport.peers()
        outsider_transport.set_peers({k: v for k, v in outsider_peers.items() if k != leader_id})
        leader_transport.set_peers({k: v for k, v in leader_peers.items() if k != outsider_id})
        await until(lambda: leader_id not in outsider_transport.connected_peers())
        await until(lambda: outsider_id not in leader_transport.connected_peers())
        forwarded = leader.fanout.stats.events_forwarded
        assert await append(session, leader.url, cid, "two") == 2
        assert await append(session, leader.url, cid, "three") == 3
        assert leader.fanout.stats.events_forwarded == forwarded  # lost for the outsider
        assert outsider.fanout.stats.loss_signals == 0

        outsider_transport.set_peers(outsider_peers)
        leader_transport.set_peers(leader_peers)
        # No further append: the channel learns of the loss by itself.
        gap = await client.recv(timeout_s=10)
        assert (gap.event, gap.payload) == ("gap", {"type": "gap", "expected": 2, "actual": 4})
        # (At least one: the cut may also have moved the leadership of the
        # groups the outsider hosts, and a later leader change signals again.)
        assert outsider.fanout.stats.loss_signals >= 1
        # And the channel is live again from 4, with no second gap.
        await append(session, leader.url, cid, "four")
        message = await client.recv()
        assert (message.event, message.payload["seq"]) == ("message", 4)
        assert await metric(session, outsider.url, "fastpaca_pubsub_loss_signals_total") >= 1
        await ws.close()
