"""Routing: any node serves any conversation request by running it at the leader.

Owns the path from a request on this node to the group's leader: find the
leader (our own Raft view, else the peers' statuses, else any replica, which
answers with a hint), run the operation there — locally when we lead, else
as a ``conv`` RPC — and retry on a new leader until the request deadline.
Reads run on the leader too (its read barrier), so they stay linearizable.

Retrying is safe because every operation is idempotent once it reaches the
state machine: upserts and tombstones are, and an append always carries an
idempotency key — the client's, or an internal one made here (the reply of a
deduplicated retry is then shown as the original reply, not as ``deduped``).
So a retry after an unknown outcome (peer gone, timeout, leadership lost)
never appends twice.

The leader side (``ForwardHandler``) runs the operation through a
``ConversationRuntime`` whose engine refuses at once when this node does not
lead (``LeaderOnlyEngine``), so the caller moves on instead of waiting here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from fastpaca.cluster.forward_codec import (
    ForwardedOp,
    LeaderMoved,
    decode_append,
    decode_applied,
    decode_messages,
    decode_op,
    decode_view,
    encode_append,
    encode_applied,
    encode_messages,
    encode_op,
    encode_view,
    error_to_remote,
    message_args,
    messages_from_args,
    remote_to_error,
)
from fastpaca.cluster.placement import group_for_conversation
from fastpaca.cluster.rpc import PeerUnavailable, RemoteError, RpcEndpoint, RpcTimeout
from fastpaca.errors import NotLeader, Unavailable
from fastpaca.raft.driver import RaftDriver
from fastpaca.store.messages import NewMessage
from fastpaca.store.reads import ConversationView, StoredMessage
from fastpaca.store.results import AppendApplied, ConversationApplied
from fastpaca.store.runtime import ConversationRuntime

__all__ = ["ForwardHandler", "LeaderDirectory", "LeaderOnlyEngine", "RoutedConversations"]

FORWARD_METHOD = "conv"
_PAUSE_MIN_S = 0.01
_PAUSE_MAX_S = 0.05
"""Longest wait between attempts when no usable leader is known. A new
leader is usually elected within ~0.1-0.3 s of the old one's death
(``RaftNode.leader_unreachable``) and known here a round trip later: a
longer pause would add up to itself to the client-visible outage, for a
retry that costs one small RPC answered at once (``not_leader``)."""
_log = logging.getLogger(__name__)
T = TypeVar("T")


class LeaderDirectory(Protocol):
    def leader_of(self, group_id: int) -> str | None: ...

    def hosts_of(self, group_id: int) -> list[str]: ...

    def forget_leader(self, group_id: int, node: str) -> None: ...


@dataclass(slots=True)
class RoutingStats:
    forwarded: int = 0
    """Operations this node sent to another node's leader."""
    served_for_peers: int = 0
    retries: int = 0
    """Attempts that ended in a redirect, a lost peer or a timeout, then retried."""


class LeaderOnlyEngine:
    """The driver, refusing with ``LeaderMoved`` whenever this node does not lead."""

    def __init__(self, driver: RaftDriver, leader_hint: Callable[[int], str | None]) -> None:
        self._driver = driver
        self._hint = leader_hint

    async def propose(self, group_id: int, data: bytes, *, timeout_s: float) -> Any:
        if not self._driver.is_leader(group_id):
            raise LeaderMoved(group_id, self._hint(group_id))
        try:
            return await self._driver.propose(group_id, data, timeout_s=timeout_s)
        except NotLeader as exc:
            raise LeaderMoved(group_id, exc.leader_hint or self._hint(group_id)) from None

    async def read_barrier(self, group_id: int, *, timeout_s: float) -> None:
        if not self._driver.is_leader(group_id):
            raise LeaderMoved(group_id, self._hint(group_id))
        try:
            await self._driver.read_barrier(group_id, timeout_s=timeout_s)
        except NotLeader as exc:
            raise LeaderMoved(group_id, exc.leader_hint or self._hint(group_id)) from None


class RoutedConversations:
    """The conversation API of a clustered node (same calls as ``ConversationRuntime``)."""

    def __init__(
        self,
        *,
        node_id: str,
        local: ConversationRuntime,
        rpc: RpcEndpoint,
        directory: LeaderDirectory,
        connected_peers: Callable[[], frozenset[str]],
        group_count: int,
        request_timeout_s: float,
    ) -> None:
        self._node_id = node_id
        self._local = local
        self._rpc = rpc
        self._directory = directory
        self._connected = connected_peers
        self._group_count = group_count
        self._timeout_s = request_timeout_s
        self._key_prefix = f"\x00{secrets.token_hex(6)}:"
        self._key_counter = itertools.count()
        self.stats = RoutingStats()

    def group_of(self, conversation_id: str) -> int:
        return group_for_conversation(conversation_id, self._group_count)

    async def upsert(
        self, conversation_id: str, metadata: dict[str, Any] | None
    ) -> ConversationApplied:
        return await self._route(
            conversation_id,
            lambda remaining: self._local.upsert(conversation_id, metadata, timeout_s=remaining),
            "upsert",
            {"m": metadata},
            decode_applied,
        )

    async def tombstone(self, conversation_id: str) -> None:
        await self._route(
            conversation_id,
            lambda remaining: self._local.tombstone(conversation_id, timeout_s=remaining),
            "tombstone",
            {},
            lambda _: None,
        )

    async def append(
        self,
        conversation_id: str,
        messages: Sequence[NewMessage],
        *,
        is_batch: bool,
        if_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendApplied:
        key = idempotency_key
        if key is None:  # ours: makes a retry after an unknown outcome safe
            key = f"{self._key_prefix}{next(self._key_counter)}"
        args = {"m": message_args(list(messages)), "b": is_batch, "v": if_version, "k": key}
        result = await self._route(
            conversation_id,
            lambda remaining: self._local.append(
                conversation_id, messages, is_batch=is_batch, if_version=if_version,
                idempotency_key=key, timeout_s=remaining,
            ),
            "append",
            args,
            decode_append,
        )  # fmt: skip
        if idempotency_key is None and result.deduped:
            return AppendApplied(items=result.items)  # our own retry landed: the original reply
        return result

    async def get(self, conversation_id: str) -> ConversationView:
        return await self._route(
            conversation_id,
            lambda remaining: _bounded(remaining, self._local.get(conversation_id)),
            "get",
            {},
            decode_view,
        )

    async def tail(self, conversation_id: str, *, limit: int, offset: int) -> list[StoredMessage]:
        return await self._route(
            conversation_id,
            lambda remaining: _bounded(
                remaining, self._local.tail(conversation_id, limit=limit, offset=offset)
            ),
            "tail",
            {"l": limit, "o": offset},
            decode_messages,
        )

    async def replay(
        self, conversation_id: str, *, from_seq: int, limit: int
    ) -> list[StoredMessage]:
        return await self._route(
            conversation_id,
            lambda remaining: _bounded(
                remaining, self._local.replay(conversation_id, from_seq=from_seq, limit=limit)
            ),
            "replay",
            {"f": from_seq, "l": limit},
            decode_messages,
        )

    async def _route(
        self,
        conversation_id: str,
        local: Callable[[float], Awaitable[T]],
        op: str,
        args: dict[str, Any],
        decode: Callable[[bytes], T],
    ) -> T:
        """Run the operation at the group's leader, retrying until the
        request deadline. ``local(remaining_s)`` runs it here and must end
        (``Unavailable`` or ``TimeoutError``) once ``remaining_s`` passed."""
        group_id = self.group_of(conversation_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        hint: str | None = None
        pause_s = _PAUSE_MIN_S
        for attempt in itertools.count():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Unavailable(f"no leader for group {group_id} in time")
            target = self._pick_target(group_id, hint, attempt)
            hint = None
            try:
                if target == self._node_id:
                    return await local(remaining)
                if target is not None:
                    self.stats.forwarded += 1
                    request = ForwardedOp(
                        op=op, conversation_id=conversation_id,
                        timeout_ms=max(1, int(remaining * 1000)), args=args,
                    )  # fmt: skip
                    reply = await self._rpc.call(
                        target, FORWARD_METHOD, encode_op(request), timeout_s=remaining
                    )
                    return decode(reply)
            except LeaderMoved as moved:
                hint = moved.leader_hint
            except RemoteError as error:
                domain = remote_to_error(error)
                if domain is not None:
                    raise domain from None
                if error.code == "not_leader" and target is not None:
                    self._directory.forget_leader(group_id, target)
                    hint = error.message or None
            except (PeerUnavailable, RpcTimeout, Unavailable, TimeoutError):
                pass  # unknown outcome, but every operation is safe to repeat
            self.stats.retries += 1
            if not self._is_usable_hint(hint, target):  # nowhere new to go: back off
                await asyncio.sleep(min(pause_s, max(0.0, deadline - loop.time())))
                pause_s = min(pause_s * 2, _PAUSE_MAX_S)
        raise AssertionError("unreachable")

    def _is_usable_hint(self, hint: str | None, tried: str | None) -> bool:
        """A leader hint worth retrying at once: another node we can reach
        (a dead leader's name, as a follower may still report it, is not)."""
        return (
            hint is not None
            and hint != tried
            and (hint == self._node_id or hint in self._connected())
        )

    def _pick_target(self, group_id: int, hint: str | None, attempt: int) -> str | None:
        if self._is_usable_hint(hint, None):
            return hint
        connected = self._connected()
        leader = self._directory.leader_of(group_id)
        if leader is not None and (leader == self._node_id or leader in connected):
            return leader
        hosts = [h for h in self._directory.hosts_of(group_id) if h in connected]
        return hosts[attempt % len(hosts)] if hosts else None


class ForwardHandler:
    """The ``conv`` RPC method: run a peer's operation here, as the leader."""

    def __init__(self, local: ConversationRuntime, stats: RoutingStats) -> None:
        self._local = local
        self._stats = stats

    def register(self, rpc: RpcEndpoint) -> None:
        rpc.register(FORWARD_METHOD, self.handle)

    async def handle(self, peer: str, payload: bytes) -> bytes:
        op = decode_op(payload)
        self._stats.served_for_peers += 1
        try:
            return await self._run(op)
        except Exception as exc:
            remote = error_to_remote(exc)
            if remote is None:
                raise
            raise remote from None

    async def _run(self, op: ForwardedOp) -> bytes:
        """Writes take the caller's remaining time as their own deadline;
        reads are bounded by it from outside."""
        local, cid, args = self._local, op.conversation_id, op.args
        timeout_s = op.timeout_ms / 1000
        match op.op:
            case "upsert":
                return encode_applied(await local.upsert(cid, args["m"], timeout_s=timeout_s))
            case "tombstone":
                await local.tombstone(cid, timeout_s=timeout_s)
                return b""
            case "append":
                result = await local.append(
                    cid, messages_from_args(args["m"]), is_batch=args["b"],
                    if_version=args["v"], idempotency_key=args["k"], timeout_s=timeout_s,
                )  # fmt: skip
                return encode_append(result)
            case "get":
                return encode_view(await _bounded(timeout_s, local.get(cid)))
            case "tail":
                page = await _bounded(timeout_s, local.tail(cid, limit=args["l"], offset=args["o"]))
                return encode_messages(page)
            case "replay":
                messages = await _bounded(
                    timeout_s, local.replay(cid, from_seq=args["f"], limit=args["l"])
                )
                return encode_messages(messages)
        raise RemoteError("bad_request", f"unknown operation {op.op!r}")


async def _bounded(timeout_s: float, operation: Awaitable[T]) -> T:
    """``operation``, cancelled with ``TimeoutError`` after ``timeout_s``
    (reads: the runtime's read barrier has no deadline parameter)."""
    async with asyncio.timeout(timeout_s):
        return await operation
