"""The websocket peer transport on real sockets on 127.0.0.1.

Every node here is a real aiohttp server on an ephemeral port with the cluster
route mounted, and a real ``WebSocketTransport`` dialing the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from fastpaca.cluster import auth
from fastpaca.cluster.transport_ws import (
    CLUSTER_PATH,
    TransportConfig,
    WebSocketTransport,
    add_cluster_route,
)
from fastpaca.raft.transport import Channel, FrameHandler

SECRET = b"correct horse battery staple"
FAST = TransportConfig(
    handshake_timeout_s=0.5,
    connect_timeout_s=1.0,
    dial_backoff_initial_s=0.02,
    dial_backoff_max_s=0.2,
    close_timeout_s=0.5,
)


@dataclass
class Node:
    transport: WebSocketTransport
    runner: web.AppRunner
    port: int
    received: list[tuple[str, int, bytes]] = field(default_factory=list)
    peer_events: list[tuple[str, bool]] = field(default_factory=list)

    def recorder(self, channel: int) -> FrameHandler:
        def record(peer: str, payload: bytes) -> None:
            self.received.append((peer, channel, payload))

        return record

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


async def start_node(
    node_id: str,
    *,
    secret: bytes = SECRET,
    config: TransportConfig = FAST,
    port: int = 0,
) -> Node:
    transport = WebSocketTransport(node_id=node_id, secret=secret, config=config)
    app = web.Application()
    add_cluster_route(app, transport)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    bound_port = runner.addresses[0][1]
    node = Node(transport=transport, runner=runner, port=bound_port)
    for channel in (Channel.RAFT, Channel.RPC, Channel.PUBSUB):
        transport.subscribe(channel, node.recorder(channel))
    transport.on_peer_state(lambda peer, up: node.peer_events.append((peer, up)))
    await transport.start()
    return node


async def stop_node(node: Node) -> None:
    await node.transport.stop()
    await node.runner.cleanup()


def mesh(*nodes: Node) -> None:
    """Tell every node where every other node is."""
    for node in nodes:
        node.transport.set_peers({other.transport.node_id: other.address for other in nodes})


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


async def delivered(sender: Node, receiver: Node, payload: bytes) -> None:
    """``payload`` reaches ``receiver`` on RAFT, sent again until it does: a
    frame written in the moment two nodes settle a simultaneous dial can go
    down with the connection they drop (the protocols above the transport
    resend), and a link that "still works" must carry it all the same."""
    peer = receiver.transport.node_id
    async with asyncio.timeout(5):
        while not receiver.received:
            assert sender.transport.send(peer, Channel.RAFT, payload)
            await asyncio.sleep(0.05)
    assert set(receiver.received) == {(sender.transport.node_id, Channel.RAFT, payload)}


NodeFactory = Callable[..., Awaitable[Node]]
"""``await nodes("a", secret=..., config=..., port=...)`` starts a node, stopped after the test."""


@pytest.fixture
async def nodes() -> AsyncIterator[NodeFactory]:
    started: list[Node] = []

    async def factory(
        node_id: str, *, secret: bytes = SECRET, config: TransportConfig = FAST, port: int = 0
    ) -> Node:
        node = await start_node(node_id, secret=secret, config=config, port=port)
        started.append(node)
        return node

    yield factory
    for node in started:
        await stop_node(node)


def connected(*nodes: Node) -> Callable[[], bool]:
    def check() -> bool:
        return all(
            node.transport.connected_peers()
            == frozenset(o.transport.node_id for o in nodes if o is not node)
            for node in nodes
        )

    return check


# --- delivery ----------------------------------------------------------------------


async def test_two_nodes_exchange_frames_on_several_channels_in_order(nodes: NodeFactory) -> None:
    a, b = await nodes("a"), await nodes("b")
    mesh(a, b)
    await eventually(connected(a, b))

    channels = (Channel.RAFT, Channel.RPC, Channel.PUBSUB)
    sent = [(channels[i % 3], f"a->b {i}".encode()) for i in range(300)]
    frames_before = a.transport.stats.peer("b").frames_sent
    assert all(a.transport.send("b", channel, payload) for channel, payload in sent)
    assert b.transport.send("a", Channel.RPC, b"reply")
    await eventually(lambda: len(b.received) == 300 and len(a.received) == 1)

    assert b.received == [("a", channel, payload) for channel, payload in sent]
    assert a.received == [("b", Channel.RPC, b"reply")]
    # All 300 were queued in one loop iteration, so the writer sends them as one frame.
    assert a.transport.stats.peer("b").frames_sent == frames_before + 1
    assert a.transport.stats.peer("b").messages_sent == 300
    assert b.transport.stats.peer("a").messages_received == 300
    assert b.transport.stats.peer("a").bytes_received == sum(len(p) for _, p in sent)


async def test_three_nodes_full_mesh_one_connection_per_pair(nodes: NodeFactory) -> None:
    trio = [await nodes(name) for name in ("n1", "n2", "n3")]
    mesh(*trio)
    await eventually(connected(*trio))
    await asyncio.sleep(FAST.duplicate_window_s / 4)  # let any simultaneous-dial race settle

    for sender in trio:
        for receiver in trio:
            if receiver is not sender:
                for i in range(20):
                    payload = f"{sender.transport.node_id}:{i}".encode()
                    assert sender.transport.send(receiver.transport.node_id, Channel.RAFT, payload)
    await eventually(lambda: all(len(node.received) == 40 for node in trio))

    for receiver in trio:
        for sender in trio:
            if sender is receiver:
                continue
            sender_id = sender.transport.node_id
            got = [p for peer, _, p in receiver.received if peer == sender_id]
            assert got == [f"{sender_id}:{i}".encode() for i in range(20)]
    # Both ends of each pair agree on which connection they kept.
    for x in trio:
        for y in trio:
            if x is not y:
                x_view = x.transport.connections()[y.transport.node_id]
                y_view = y.transport.connections()[x.transport.node_id]
                assert x_view == y_view


async def test_send_to_unconnected_peer_is_dropped_and_counted(nodes: NodeFactory) -> None:
    a = await nodes("a")
    assert not a.transport.send("ghost", Channel.RAFT, b"x")
    assert a.transport.stats.peer("ghost").drops == 1


async def test_queue_bound_drops_and_counts_beyond_it(nodes: NodeFactory) -> None:
    bounded = TransportConfig(
        handshake_timeout_s=0.5, dial_backoff_initial_s=0.02, send_queue_messages_max=10
    )
    a, b = await nodes("a", config=bounded), await nodes("b")
    mesh(a, b)
    await eventually(connected(a, b))

    results = [a.transport.send("b", Channel.RAFT, bytes([i])) for i in range(25)]
    assert results == [True] * 10 + [False] * 15
    assert a.transport.stats.peer("b").drops == 15
    await eventually(lambda: len(b.received) == 10)
    await asyncio.sleep(0.05)
    assert [p for _, _, p in b.received] == [bytes([i]) for i in range(10)]


# --- authentication ----------------------------------------------------------------


async def test_wrong_secret_is_rejected_and_counted_on_both_sides(nodes: NodeFactory) -> None:
    a, b = await nodes("a"), await nodes("b")
    intruder = await nodes("c", secret=b"not the secret")
    mesh(a, b, intruder)
    await eventually(connected(a, b))
    await eventually(
        lambda: (
            a.transport.stats.peer("c").auth_failures >= 1
            and intruder.transport.stats.auth_failures >= 2
        )
    )
    assert "c" not in a.transport.connected_peers()
    assert "c" not in b.transport.connected_peers()
    assert intruder.transport.connected_peers() == frozenset()
    await delivered(a, b, b"still fine")


async def test_forged_identity_without_secret_cannot_take_over_a_peer(nodes: NodeFactory) -> None:
    a, b = await nodes("a"), await nodes("b")
    mesh(a, b)
    await eventually(connected(a, b))
    failures_before = a.transport.stats.auth_failures
    async with aiohttp.ClientSession() as session, session.ws_connect(_url(a)) as ws:
        await ws.send_bytes(auth.encode_hello(auth.Hello("b", auth.new_nonce())))
        auth.decode_challenge((await ws.receive()).data)
        await ws.send_bytes(auth.encode_proof(b"\x00" * auth.PROOF_BYTES))
        closing = await ws.receive()
        assert closing.type is aiohttp.WSMsgType.CLOSE
    assert a.transport.stats.auth_failures == failures_before + 1
    assert a.transport.stats.peer("b").auth_failures == 1
    assert a.transport.connected_peers() == frozenset({"b"})
    await delivered(a, b, b"ok")


async def test_replayed_handshake_is_rejected(nodes: NodeFactory) -> None:
    a = await nodes("a")
    hello = auth.Hello("z", auth.new_nonce())
    async with aiohttp.ClientSession() as session:
        # A genuine member's handshake, recorded.
        async with session.ws_connect(_url(a)) as ws:
            await ws.send_bytes(auth.encode_hello(hello))
            challenge = auth.decode_challenge((await ws.receive()).data)
            proof = auth.client_proof(SECRET, "z", "a", hello.client_nonce, challenge.server_nonce)
            await ws.send_bytes(auth.encode_proof(proof))
            auth.decode_accept((await ws.receive()).data)
        # Replaying it verbatim fails: the server's nonce is fresh.
        async with session.ws_connect(_url(a)) as ws:
            await ws.send_bytes(auth.encode_hello(hello))
            await ws.receive()
            await ws.send_bytes(auth.encode_proof(proof))
            assert (await ws.receive()).type is aiohttp.WSMsgType.CLOSE
    assert a.transport.stats.auth_failures == 1


# --- hostile or broken connections -------------------------------------------------


async def test_garbage_bytes_on_the_port_are_closed_and_peers_unaffected(
    nodes: NodeFactory,
) -> None:
    a, b = await nodes("a"), await nodes("b")
    mesh(a, b)
    await eventually(connected(a, b))
    reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
    writer.write(bytes(range(256)) * 4 + b"\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(2):
        await reader.read()  # EOF: the server closed it
    writer.close()
    await delivered(a, b, b"after garbage")


async def test_plain_http_client_is_refused_and_counted(nodes: NodeFactory) -> None:
    a = await nodes("a")
    async with aiohttp.ClientSession() as session, session.get(_url(a)) as response:
        assert response.status == 400
    assert a.transport.stats.rejected_requests == 1


async def test_garbled_handshake_is_closed_and_counted(nodes: NodeFactory) -> None:
    a, b = await nodes("a"), await nodes("b")
    mesh(a, b)
    await eventually(connected(a, b))
    async with aiohttp.ClientSession() as session, session.ws_connect(_url(a)) as ws:
        await ws.send_bytes(b"\xff" * 100)
        closing = await ws.receive()
        assert closing.type is aiohttp.WSMsgType.CLOSE
    assert a.transport.stats.auth_failures == 1
    assert a.transport.connected_peers() == frozenset({"b"})


async def test_stalled_handshake_is_closed_at_the_deadline(nodes: NodeFactory) -> None:
    a, b = await nodes("a"), await nodes("b")
    mesh(a, b)
    await eventually(connected(a, b))
    async with aiohttp.ClientSession() as session, session.ws_connect(_url(a)) as ws:
        async with asyncio.timeout(FAST.handshake_timeout_s * 4):
            closing = await ws.receive()  # we send nothing; the server gives up
        assert closing.type is aiohttp.WSMsgType.CLOSE
    assert a.transport.stats.handshake_timeouts == 1
    await delivered(a, b, b"unaffected")


async def test_malformed_frame_after_handshake_closes_only_that_link(nodes: NodeFactory) -> None:
    a = await nodes("a")
    async with aiohttp.ClientSession() as session, session.ws_connect(_url(a)) as ws:
        await _authenticate(ws, client_id="m", server_id="a")
        await eventually(lambda: "m" in a.transport.connected_peers())
        await ws.send_bytes(b"\x01\x00\x00\x00\xff short")  # claims 255 bytes, has 6
        closing = await ws.receive()
        assert closing.type is aiohttp.WSMsgType.CLOSE
    await eventually(lambda: "m" not in a.transport.connected_peers())
    assert a.transport.stats.peer("m").malformed_frames == 1
    assert a.received == []
    assert ("m", True) in a.peer_events and ("m", False) in a.peer_events


async def test_payload_rejected_by_its_handler_closes_the_link_which_comes_back(
    nodes: NodeFactory,
) -> None:
    a, b = await nodes("a"), await nodes("b")
    mesh(a, b)
    await eventually(connected(a, b))

    def strict(peer: str, payload: bytes) -> None:
        if payload == b"poison":
            raise ValueError("cannot decode")
        b.received.append((peer, Channel.RAFT, payload))

    b.transport.subscribe(Channel.RAFT, strict)
    for payload in (b"one", b"poison", b"lost with the poisoned frame"):
        assert a.transport.send("b", Channel.RAFT, payload)
    await eventually(lambda: b.transport.stats.peer("a").malformed_frames == 1)
    assert b.transport.stats.handler_errors == 1
    await eventually(lambda: a.peer_events[-2:] == [("b", False), ("b", True)])
    assert a.transport.send("b", Channel.RAFT, b"two")
    await eventually(lambda: [p for _, _, p in b.received] == [b"one", b"two"])


# --- liveness ----------------------------------------------------------------------


async def test_restarted_peer_is_reconnected_without_anyone_acting(nodes: NodeFactory) -> None:
    a, b = await nodes("a"), await nodes("b")
    mesh(a, b)
    await eventually(connected(a, b))
    port = b.port
    await stop_node(b)
    await eventually(lambda: a.transport.connected_peers() == frozenset())
    assert a.peer_events == [("b", True), ("b", False)]
    assert not a.transport.send("b", Channel.RAFT, b"lost")

    b2 = await nodes("b", port=port)  # b2 knows no peers: a must dial it
    await eventually(lambda: a.transport.connected_peers() == frozenset({"b"}))
    assert a.peer_events[-1] == ("b", True)
    assert a.transport.send("b", Channel.RAFT, b"welcome back")
    await eventually(lambda: b2.received == [("a", Channel.RAFT, b"welcome back")])
    assert b2.transport.send("a", Channel.RAFT, b"hello")
    await eventually(lambda: ("b", Channel.RAFT, b"hello") in a.received)


async def test_removed_peer_is_no_longer_dialed(nodes: NodeFactory) -> None:
    a, b = await nodes("a"), await nodes("b")
    a.transport.set_peers({"b": b.address})  # only a dials
    await eventually(connected(a, b))
    a.transport.set_peers({})
    await eventually(
        lambda: not a.transport.connected_peers() and not b.transport.connected_peers()
    )
    await asyncio.sleep(FAST.dial_backoff_max_s)
    assert a.transport.stats.peer("b").connects == 1
    a.transport.set_peers({"b": b.address})
    await eventually(connected(a, b))
    assert a.transport.stats.peer("b").connects == 2


def _url(node: Node) -> str:
    return f"http://127.0.0.1:{node.port}{CLUSTER_PATH}"


async def _authenticate(
    ws: aiohttp.ClientWebSocketResponse, *, client_id: str, server_id: str
) -> None:
    nonce = auth.new_nonce()
    await ws.send_bytes(auth.encode_hello(auth.Hello(client_id, nonce)))
    challenge = auth.decode_challenge((await ws.receive()).data)
    proof = auth.client_proof(SECRET, client_id, server_id, nonce, challenge.server_nonce)
    await ws.send_bytes(auth.encode_proof(proof))
    auth.decode_accept((await ws.receive()).data)


async def test_new_connection_from_a_restarted_peer_replaces_the_stale_one(
    nodes: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    window = TransportConfig(
        handshake_timeout_s=0.5, dial_backoff_initial_s=0.02, duplicate_window_s=0.3
    )
    a, old_b = await nodes("a", config=window), await nodes("b", config=window)
    a.transport.set_peers({"b": old_b.address})  # a (the lower id) dials; old b never does
    await eventually(connected(a, old_b))
    assert a.transport.connections() == {"b": "a"}

    # A second "b" (the restarted process, while a still holds the old connection).
    # Inside the window a keeps its own fresh dial and refuses the newcomer...
    new_b = await nodes("b", config=window)
    new_b.transport.set_peers({"a": a.address})
    await asyncio.sleep(window.duplicate_window_s / 3)
    assert a.transport.connections() == {"b": "a"}
    # ...after it, the newcomer's dial replaces the stale connection.
    await eventually(lambda: a.transport.connections() == {"b": "b"})
    await eventually(lambda: not old_b.transport.connected_peers())
    assert a.peer_events == [("b", True)]  # a replacement is not a disconnect
    assert a.transport.send("b", Channel.RAFT, b"to the new b")
    await eventually(lambda: new_b.received == [("a", Channel.RAFT, b"to the new b")])
    assert old_b.received == []
    # Being refused as a duplicate meanwhile is the rule at work, not a
    # connection problem: no warning for an operator to chase.
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if "cannot connect" in w], warnings
