"""RPC calls between two real websocket transports on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from fastpaca.cluster.rpc import PeerUnavailable, RemoteError, RpcEndpoint, RpcTimeout
from fastpaca.cluster.transport_ws import TransportConfig, WebSocketTransport, add_cluster_route

SECRET = b"rpc-test-secret"
FAST = TransportConfig(
    handshake_timeout_s=0.5, connect_timeout_s=1.0, dial_backoff_initial_s=0.02,
    dial_backoff_max_s=0.2, close_timeout_s=0.5,
)  # fmt: skip


class Node:
    def __init__(self, node_id: str) -> None:
        self.transport = WebSocketTransport(node_id=node_id, secret=SECRET, config=FAST)
        self.rpc = RpcEndpoint(self.transport)
        self.app = web.Application()
        add_cluster_route(self.app, self.transport)
        self.runner = web.AppRunner(self.app, shutdown_timeout=0.5)
        self.port = 0

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        await self.transport.start()

    async def stop(self) -> None:
        await self.rpc.close()
        await self.transport.stop()
        await self.runner.cleanup()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    a, b = Node("a@127.0.0.1"), Node("b@127.0.0.1")
    await a.start()
    await b.start()
    peers = {"a@127.0.0.1": ("127.0.0.1", a.port), "b@127.0.0.1": ("127.0.0.1", b.port)}
    a.transport.set_peers(peers)
    b.transport.set_peers(peers)
    async with asyncio.timeout(5):
        while (
            "b@127.0.0.1" not in a.transport.connected_peers()
            or "a@127.0.0.1" not in b.transport.connected_peers()
        ):
            await asyncio.sleep(0.01)
    yield a, b
    await a.stop()
    await b.stop()


async def test_call_returns_the_handlers_reply(pair: tuple[Node, Node]) -> None:
    a, b = pair
    seen: list[str] = []

    async def echo(peer: str, payload: bytes) -> bytes:
        seen.append(peer)
        return payload[::-1]

    b.rpc.register("echo", echo)
    replies = await asyncio.gather(
        *(a.rpc.call("b@127.0.0.1", "echo", f"m{i}".encode(), timeout_s=2) for i in range(50))
    )
    assert replies == [f"m{i}".encode()[::-1] for i in range(50)]
    assert seen == ["a@127.0.0.1"] * 50


async def test_errors_travel_back_typed(pair: tuple[Node, Node]) -> None:
    a, b = pair

    async def refuse(peer: str, payload: bytes) -> bytes:
        raise RemoteError("not_leader", "ask n3")

    async def crash(peer: str, payload: bytes) -> bytes:
        raise ZeroDivisionError("secret internals")

    b.rpc.register("refuse", refuse)
    b.rpc.register("crash", crash)
    with pytest.raises(RemoteError) as refused:
        await a.rpc.call("b@127.0.0.1", "refuse", b"", timeout_s=2)
    assert (refused.value.code, refused.value.message) == ("not_leader", "ask n3")
    with pytest.raises(RemoteError) as crashed:
        await a.rpc.call("b@127.0.0.1", "crash", b"", timeout_s=2)
    assert crashed.value.code == "internal" and "secret" not in crashed.value.message
    with pytest.raises(RemoteError) as unknown:
        await a.rpc.call("b@127.0.0.1", "nope", b"", timeout_s=2)
    assert unknown.value.code == "unknown_method"


async def test_timeout_and_unknown_peer(pair: tuple[Node, Node]) -> None:
    a, b = pair

    async def slow(peer: str, payload: bytes) -> bytes:
        await asyncio.sleep(5)
        return b""

    b.rpc.register("slow", slow)
    with pytest.raises(RpcTimeout):
        await a.rpc.call("b@127.0.0.1", "slow", b"", timeout_s=0.1)
    with pytest.raises(PeerUnavailable):
        await a.rpc.call("zed@127.0.0.1", "slow", b"", timeout_s=1)


async def test_peer_going_away_fails_pending_calls(pair: tuple[Node, Node]) -> None:
    a, b = pair
    started = asyncio.Event()

    async def hang(peer: str, payload: bytes) -> bytes:
        started.set()
        await asyncio.sleep(30)
        return b""

    b.rpc.register("hang", hang)
    call = asyncio.create_task(a.rpc.call("b@127.0.0.1", "hang", b"", timeout_s=10))
    await started.wait()
    await b.stop()
    with pytest.raises(PeerUnavailable):
        await call
