"""Bookkeeping of state-machine snapshots streamed between two nodes.

A leader's core asks for an InstallSnapshot with a SNAPSHOT message; the host
turns it into an :class:`OutgoingSnapshot`: the state machine's current state
cut into chunks, one chunk per transfer per iteration (bounded bytes per
frame), the SNAPSHOT message riding in the frame of the last chunk. The
follower stages chunks (``LevelDBStorage.stage_incoming_chunk``), steps the
message into its core only once every chunk is there, and answers with a
``SnapshotStatus``; the leader then calls ``report_snapshot``.

``SnapshotSender``/``SnapshotReceiver`` only keep track of transfers (what to
send next, what timed out, which chunk is expected); ``SnapshotExchange``
wires them to the state machine and the storages, writing only into the
batches it is given. Nothing here touches a core or the network: ``host.py``
does, with what these classes tell it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from fastpaca.errors import InvariantViolation
from fastpaca.raft.codec import CodecError, SnapshotChunk, SnapshotStatus
from fastpaca.raft.kv import WriteBatch
from fastpaca.raft.leveldb import LevelDBStorage
from fastpaca.raft.messages import Message, SnapshotMeta
from fastpaca.raft.statemachine import StateMachine
from fastpaca.raft.stats import HostStats

__all__ = [
    "IncomingSnapshot",
    "OutgoingSnapshot",
    "SnapshotExchange",
    "SnapshotReceiver",
    "SnapshotSender",
]

_log = logging.getLogger(__name__)


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
            if transfer.restored is not None:
                continue  # in the core's hands: the next iteration installs it
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


class SnapshotExchange:
    """Both directions of snapshot streaming for one node, wired to the state
    machine and the groups' storages; the host tells the cores what it says.

    Sending: :meth:`start` when a core emits SNAPSHOT, :meth:`outgoing` each
    iteration, :meth:`on_status` when the follower answers. Receiving:
    :meth:`on_chunk`, :meth:`on_snapshot_message` (True: step it into the
    core), :meth:`install` when the core's Ready carries it.
    """

    def __init__(
        self, state_machine: StateMachine, stats: HostStats, *, chunk_bytes: int, timeout_ticks: int
    ) -> None:
        self._sm = state_machine
        self._stats = stats
        self._chunk_bytes = chunk_bytes
        self.sender = SnapshotSender(timeout_ticks=timeout_ticks)
        self.receiver = SnapshotReceiver(timeout_ticks=timeout_ticks)
        self._statuses: dict[str, list[SnapshotStatus]] = {}

    def has_statuses(self) -> bool:
        return bool(self._statuses)

    # --- leader side ------------------------------------------------------------------

    def start(self, storage: LevelDBStorage, msg: Message) -> None:
        # Send the state machine's current (durable) state, not the log's
        # compaction base: it is newer and it is what the chunks contain.
        snapshot = self._sm.snapshot(msg.group_id)
        index = snapshot.applied_index
        meta = SnapshotMeta(index=index, term=storage.term(index), conf_state=storage.conf_state)
        self.sender.start(replace(msg, snapshot=meta), snapshot.chunks(self._chunk_bytes))
        self._stats.snapshots_sent += 1

    def on_status(self, peer: str, status: SnapshotStatus) -> bool:
        """True when ``status`` ends our transfer: report it to the core."""
        if not self.sender.finish(status.group_id, peer, status.snapshot_index):
            return False
        if not status.success:
            self._stats.snapshot_failures += 1
        return True

    def outgoing(
        self, messages: dict[str, list[Message]]
    ) -> tuple[dict[str, list[SnapshotChunk]], dict[str, list[SnapshotStatus]]]:
        """This iteration's chunks and statuses per peer; the SNAPSHOT message
        of a transfer's last chunk is added to ``messages``."""
        chunks: dict[str, list[SnapshotChunk]] = {}
        for peer, chunk, message in self.sender.next_chunks():
            chunks.setdefault(peer, []).append(chunk)
            if message is not None:
                messages.setdefault(peer, []).append(message)
        statuses, self._statuses = self._statuses, {}
        return chunks, statuses

    # --- follower side ------------------------------------------------------------------

    def on_chunk(
        self, peer: str, chunk: SnapshotChunk, storage: LevelDBStorage, batch: WriteBatch
    ) -> None:
        stage, abandoned = self.receiver.accept_chunk(peer, chunk)
        if abandoned:
            storage.stage_clear_incoming(batch)
        if stage:
            storage.stage_incoming_chunk(batch, chunk.seq, chunk.data)
        else:
            self._stats.dropped_snapshots += 1
            self._queue_status(peer, chunk.group_id, chunk.snapshot_index, success=False)

    def on_snapshot_message(self, storage: LevelDBStorage, msg: Message, batch: WriteBatch) -> bool:
        """True when every chunk is staged and restores cleanly (into a scratch
        batch, so a bad chunk never reaches the core): step ``msg`` then."""
        group_id, meta = msg.group_id, msg.snapshot
        transfer = self.receiver.complete_for(group_id, msg.sender, meta.index) if meta else None
        if meta is None or transfer is None:
            self._stats.dropped_snapshots += 1
            if meta is not None:
                self._queue_status(msg.sender, group_id, meta.index, success=False)
            return False
        chunks = storage.incoming_chunks(batch, transfer.chunk_count)
        scratch = WriteBatch(batch)
        try:
            if chunks is None:
                raise CodecError("staged snapshot chunks are missing")
            self._sm.restore(group_id, meta.index, chunks, scratch)
        except CodecError as exc:
            _log.warning("raft group %d: bad snapshot from %s: %s", group_id, msg.sender, exc)
            del self.receiver.transfers[group_id]
            storage.stage_clear_incoming(batch)
            self._stats.snapshot_failures += 1
            self._queue_status(msg.sender, group_id, meta.index, success=False)
            return False
        transfer.restored = scratch
        return True

    def install(self, storage: LevelDBStorage, meta: SnapshotMeta, batch: WriteBatch) -> None:
        """The core accepted the snapshot: write it (log base + restored state)."""
        group_id = storage.group_id
        transfer = self.receiver.transfers.pop(group_id, None)
        if transfer is None or transfer.restored is None or transfer.snapshot_index != meta.index:
            raise InvariantViolation(f"group {group_id}: core installs an unstaged snapshot")
        storage.stage_snapshot(batch, meta)
        for key, value in transfer.restored.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        storage.stage_clear_incoming(batch)
        self._queue_status(transfer.sender, group_id, meta.index, success=True)
        self._stats.snapshots_installed += 1

    def answer_declined(
        self, storage_of: Callable[[int], LevelDBStorage | None], batch: WriteBatch
    ) -> None:
        """Snapshots stepped but not installed (the core was already up to
        date): drop their chunks and let the leader move on."""
        declined = [g for g, t in self.receiver.transfers.items() if t.restored is not None]
        for group_id in declined:
            transfer = self.receiver.transfers.pop(group_id)
            storage = storage_of(group_id)
            if storage is not None:
                storage.stage_clear_incoming(batch)
            self._queue_status(transfer.sender, group_id, transfer.snapshot_index, success=True)

    def drop_group(self, group_id: int) -> None:
        self.sender.drop_group(group_id)
        self.receiver.transfers.pop(group_id, None)

    def _queue_status(self, peer: str, group_id: int, index: int, *, success: bool) -> None:
        status = SnapshotStatus(group_id=group_id, snapshot_index=index, success=success)
        self._statuses.setdefault(peer, []).append(status)
