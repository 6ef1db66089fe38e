"""The router's retry rules, with a scripted peer (no network): it follows
leader hints, retries an unknown outcome with the same idempotency key, and
shows its own deduplicated retry as the original reply."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

import pytest

from fastpaca.cluster.forward_codec import (
    ForwardedOp,
    decode_op,
    encode_append,
    encode_op,
    message_args,
)
from fastpaca.cluster.routing import ForwardHandler, RoutedConversations, RoutingStats
from fastpaca.cluster.rpc import PeerUnavailable, RemoteError, RpcEndpoint, RpcTimeout
from fastpaca.errors import ConversationNotFound, ProposalTimeout, Unavailable
from fastpaca.store.messages import NewMessage
from fastpaca.store.reads import StoreReader
from fastpaca.store.results import AppendApplied, AppendedItem
from fastpaca.store.runtime import ConversationRuntime

Reply = Callable[[str, dict[str, Any]], bytes]


class ScriptedPeers:
    """Stands in for ``RpcEndpoint``: each call runs the next scripted step."""

    def __init__(self, steps: list[Reply]) -> None:
        self.steps = steps
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, peer: str, method: str, payload: bytes, *, timeout_s: float) -> bytes:
        assert method == "conv" and timeout_s > 0
        op = decode_op(payload)
        self.calls.append((peer, op.args))
        return self.steps.pop(0)(peer, op.args)


class Directory:
    def __init__(self, leader: str | None) -> None:
        self.leader = leader
        self.forgotten: list[tuple[int, str]] = []

    def leader_of(self, group_id: int) -> str | None:
        return self.leader

    def hosts_of(self, group_id: int) -> list[str]:
        return ["n3"]

    def forget_leader(self, group_id: int, node: str) -> None:
        self.forgotten.append((group_id, node))
        self.leader = None


def router(
    peers: ScriptedPeers, directory: Directory, timeout_s: float = 2.0
) -> RoutedConversations:
    return RoutedConversations(
        node_id="n1",
        local=cast(ConversationRuntime, object()),  # never leader here: never called
        rpc=cast(RpcEndpoint, peers),
        directory=directory,
        connected_peers=lambda: frozenset({"n2", "n3"}),
        group_count=8,
        request_timeout_s=timeout_s,
    )


def applied(deduped: bool) -> bytes:
    return encode_append(
        AppendApplied(items=(AppendedItem(seq=7, version=7, token_count=1),), deduped=deduped)
    )


MESSAGE = [NewMessage(role="user", parts=[{"type": "text", "text": "hi"}], metadata={})]


async def test_unknown_outcome_is_retried_with_the_same_key_and_shown_as_original() -> None:
    def lost(peer: str, args: dict[str, Any]) -> bytes:
        raise RpcTimeout("applied, but the reply was lost")

    peers = ScriptedPeers([lost, lambda p, a: applied(deduped=True)])
    result = await router(peers, Directory("n2")).append("c", MESSAGE, is_batch=False)
    assert result == AppendApplied(items=(AppendedItem(seq=7, version=7, token_count=1),))
    keys = [args["k"] for _, args in peers.calls]
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0].startswith("\x00")


async def test_a_client_key_is_kept_and_its_dedup_shown() -> None:
    peers = ScriptedPeers([lambda p, a: applied(deduped=True)])
    result = await router(peers, Directory("n2")).append(
        "c", MESSAGE, is_batch=False, idempotency_key="client-key"
    )
    assert result.deduped and peers.calls[0][1]["k"] == "client-key"


async def test_leader_hint_is_followed_and_the_stale_claim_forgotten() -> None:
    def moved(peer: str, args: dict[str, Any]) -> bytes:
        raise RemoteError("not_leader", "n3")

    peers = ScriptedPeers([moved, lambda p, a: applied(deduped=False)])
    directory = Directory("n2")
    await router(peers, directory).append("c", MESSAGE, is_batch=False)
    assert [peer for peer, _ in peers.calls] == ["n2", "n3"]
    assert directory.forgotten == [(router(peers, directory).group_of("c"), "n2")]


async def test_a_lost_peer_is_retried_and_outcome_kept_safe() -> None:
    def gone(peer: str, args: dict[str, Any]) -> bytes:
        raise PeerUnavailable("n2 went away mid-call")

    peers = ScriptedPeers([gone, lambda p, a: applied(deduped=False)])
    await router(peers, Directory("n2")).append("c", MESSAGE, is_batch=False)
    assert [peer for peer, _ in peers.calls] == ["n2", "n2"]
    assert peers.calls[0][1]["k"] == peers.calls[1][1]["k"]


async def test_without_a_known_leader_a_replica_is_asked() -> None:
    peers = ScriptedPeers([lambda p, a: applied(deduped=False)])
    await router(peers, Directory(None)).append("c", MESSAGE, is_batch=False)
    assert [peer for peer, _ in peers.calls] == ["n3"]


async def test_domain_errors_are_not_retried() -> None:
    def missing(peer: str, args: dict[str, Any]) -> bytes:
        raise RemoteError("not_found", "Conversation 'c' not found")

    peers = ScriptedPeers([missing])
    with pytest.raises(ConversationNotFound):
        await router(peers, Directory("n2")).get("c")
    assert len(peers.calls) == 1


async def test_no_leader_anywhere_ends_unavailable_at_the_deadline() -> None:
    def no_leader(peer: str, args: dict[str, Any]) -> bytes:
        raise RemoteError("not_leader", "")

    peers = ScriptedPeers([no_leader] * 100)
    with pytest.raises(Unavailable):
        await router(peers, Directory(None), timeout_s=0.3).get("c")
    assert 2 <= len(peers.calls) < 100  # backed off, did not spin


async def test_a_hint_naming_an_unreachable_node_backs_off() -> None:
    # A follower may still name the dead leader: retrying at once would spin.
    def stale_hint(peer: str, args: dict[str, Any]) -> bytes:
        raise RemoteError("not_leader", "n9")

    peers = ScriptedPeers([stale_hint] * 1000)
    with pytest.raises(Unavailable):
        await router(peers, Directory(None), timeout_s=0.3).get("c")
    assert 2 <= len(peers.calls) <= 10, len(peers.calls)


class SilentEngine:
    """A leader whose proposals never commit: each ends, like the driver's,
    with ``ProposalTimeout`` once the ``timeout_s`` it was given ran out."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    async def propose(self, group_id: int, data: bytes, *, timeout_s: float) -> Any:
        self.timeouts.append(timeout_s)
        await asyncio.sleep(timeout_s)
        raise ProposalTimeout(f"group {group_id}: not committed in time")

    async def read_barrier(self, group_id: int, *, timeout_s: float) -> None:
        await asyncio.sleep(3600)  # reads are bounded from outside


def silent_runtime(engine: SilentEngine) -> ConversationRuntime:
    return ConversationRuntime(
        engine=engine,
        reader=cast(StoreReader, object()),
        group_count=8,
        request_timeout_s=30.0,  # far longer than the deadlines below
    )


async def test_a_local_append_ends_at_the_request_deadline() -> None:
    engine = SilentEngine()
    routed = RoutedConversations(
        node_id="n1",
        local=silent_runtime(engine),
        rpc=cast(RpcEndpoint, ScriptedPeers([])),
        directory=Directory("n1"),
        connected_peers=lambda: frozenset({"n2", "n3"}),
        group_count=8,
        request_timeout_s=0.3,
    )
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await routed.append("c", MESSAGE, is_batch=False)
    assert time.monotonic() - started < 2.0
    assert engine.timeouts and max(engine.timeouts) <= 0.3


async def test_a_served_append_and_read_end_within_the_callers_time() -> None:
    engine = SilentEngine()
    handler = ForwardHandler(silent_runtime(engine), RoutingStats())
    append = ForwardedOp(
        op="append", conversation_id="c", timeout_ms=200,
        args={"m": message_args(MESSAGE), "b": False, "v": None, "k": "key-1"},
    )  # fmt: skip
    read = ForwardedOp(op="get", conversation_id="c", timeout_ms=200, args={})
    for op in (append, read):
        started = time.monotonic()
        with pytest.raises(RemoteError) as raised:
            await handler.handle("n2", encode_op(op))
        assert raised.value.code == "unavailable"
        assert time.monotonic() - started < 2.0
    assert engine.timeouts and max(engine.timeouts) <= 0.2
