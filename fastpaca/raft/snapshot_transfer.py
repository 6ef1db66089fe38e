"""Bookkeeping of state-machine snapshots streamed between two nodes.

A leader's core asks for an InstallSnapshot with a SNAPSHOT message; the host
turns it into an :class:`OutgoingSnapshot`: the state machine's current state
cut into chunks, one chunk per transfer per iteration (bounded bytes per
frame), the SNAPSHOT message riding in the frame of the last chunk. The
follower stages chunks (``LevelDBStorage.stage_incoming_chunk``), steps the
message into its core only once every chunk is there, and answers with a
``SnapshotStatus``; the leader then calls ``report_snapshot``.

This module only keeps track of transfers (what to send next, what timed out,
which chunk is expected). It never touches a core, the KV or the network:
``host.py`` does, with what these classes tell it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fastpaca.raft.codec import SnapshotChunk
from fastpaca.raft.kv import WriteBatch
from fastpaca.raft.messages import Message

__all__ = ["IncomingSnapshot", "OutgoingSnapshot", "SnapshotReceiver", "SnapshotSender"]


@dataclass(slots=True, kw_only=True)
class OutgoingSnapshot:
    group_id: int
    peer: str
    message: Message
    """The SNAPSHOT message, with the state machine's meta; sent with the last chunk."""
    chunks: Iterator[bytes]
    next_chunk: bytes | None
    seq: int = 0
    sent_last: bool = False
    idle_ticks: int = 0

    @property
    def snapshot_index(self) -> int:
        assert self.message.snapshot is not None
        return self.message.snapshot.index


class SnapshotSender:
    """Outgoing transfers, at most one per (group, peer)."""

    def __init__(self, *, timeout_ticks: int) -> None:
        self._timeout_ticks = timeout_ticks
        self._transfers: dict[tuple[int, str], OutgoingSnapshot] = {}

    def start(self, message: Message, chunks: Iterator[bytes]) -> None:
        """Begin streaming (replacing an older transfer to the same peer)."""
        self._transfers[(message.group_id, message.to)] = OutgoingSnapshot(
            group_id=message.group_id,
            peer=message.to,
            message=message,
            chunks=chunks,
            next_chunk=next(chunks, None),
        )

    def has_chunks_to_send(self) -> bool:
        return any(not t.sent_last for t in self._transfers.values())

    def next_chunks(self) -> list[tuple[str, SnapshotChunk, Message | None]]:
        """(peer, chunk, SNAPSHOT message when the chunk is the last one) for
        one chunk of every transfer still sending."""
        out: list[tuple[str, SnapshotChunk, Message | None]] = []
        for transfer in self._transfers.values():
            if transfer.sent_last:
                continue
            data = transfer.next_chunk or b""
            transfer.next_chunk = next(transfer.chunks, None)
            is_last = transfer.next_chunk is None
            chunk = SnapshotChunk(
                group_id=transfer.group_id,
                term=transfer.message.term,
                snapshot_index=transfer.snapshot_index,
                seq=transfer.seq,
                is_last=is_last,
                data=data,
            )
            transfer.seq += 1
            transfer.idle_ticks = 0
            transfer.sent_last = is_last
            out.append((transfer.peer, chunk, transfer.message if is_last else None))
        return out

    def finish(self, group_id: int, peer: str, snapshot_index: int) -> bool:
        """The follower answered; True when it answers the current transfer."""
        transfer = self._transfers.get((group_id, peer))
        if transfer is None or transfer.snapshot_index != snapshot_index:
            return False
        del self._transfers[(group_id, peer)]
        return True

    def tick(self) -> list[tuple[int, str]]:
        """(group, peer) of transfers whose follower never answered: failed."""
        expired = []
        for key, transfer in self._transfers.items():
            transfer.idle_ticks += 1
            if transfer.idle_ticks > self._timeout_ticks:
                expired.append(key)
        for key in expired:
            del self._transfers[key]
        return expired

    def drop_peer(self, peer: str) -> list[int]:
        """Abort every transfer to ``peer``; returns their groups."""
        keys = [key for key in self._transfers if key[1] == peer]
        for key in keys:
            del self._transfers[key]
        return [group_id for group_id, _ in keys]

    def drop_group(self, group_id: int) -> None:
        for key in [key for key in self._transfers if key[0] == group_id]:
            del self._transfers[key]


@dataclass(slots=True, kw_only=True)
class IncomingSnapshot:
    sender: str
    snapshot_index: int
    chunk_count: int = 0
    complete: bool = False
    restored: WriteBatch | None = None
    """The state machine's restore, done into a scratch batch when the
    SNAPSHOT message arrived; merged into the iteration batch on install."""
    idle_ticks: int = 0


class SnapshotReceiver:
    """Incoming transfers, at most one per group (only its leader sends)."""

    def __init__(self, *, timeout_ticks: int) -> None:
        self._timeout_ticks = timeout_ticks
        self.transfers: dict[int, IncomingSnapshot] = {}

    def accept_chunk(self, sender: str, chunk: SnapshotChunk) -> tuple[bool, bool]:
        """Track ``chunk``: returns (stage it, the previous transfer of this
        group was abandoned and its staged chunks must be cleared)."""
        current = self.transfers.get(chunk.group_id)
        if current is not None and current.restored is not None:
            return False, False  # stepped into the core: install it before anything new
        if chunk.seq == 0:
            fresh = IncomingSnapshot(sender=sender, snapshot_index=chunk.snapshot_index)
            self.transfers[chunk.group_id] = fresh
            self._add(fresh, chunk)
            return True, current is not None
        if (
            current is None
            or current.complete
            or current.sender != sender
            or current.snapshot_index != chunk.snapshot_index
            or current.chunk_count != chunk.seq
        ):
            if current is not None:
                del self.transfers[chunk.group_id]
            return False, current is not None
        self._add(current, chunk)
        return True, False

    def complete_for(
        self, group_id: int, sender: str, snapshot_index: int
    ) -> IncomingSnapshot | None:
        transfer = self.transfers.get(group_id)
        if (
            transfer is None
            or not transfer.complete
            or transfer.sender != sender
            or transfer.snapshot_index != snapshot_index
        ):
            return None
        return transfer

    def tick(self) -> list[int]:
        """Groups whose transfer stalled; their staged chunks must be cleared."""
        expired = []
        for group_id, transfer in self.transfers.items():
            transfer.idle_ticks += 1
            if transfer.idle_ticks > self._timeout_ticks:
                expired.append(group_id)
        for group_id in expired:
            del self.transfers[group_id]
        return expired

    @staticmethod
    def _add(transfer: IncomingSnapshot, chunk: SnapshotChunk) -> None:
        transfer.chunk_count += 1
        transfer.complete = chunk.is_last
        transfer.idle_ticks = 0
