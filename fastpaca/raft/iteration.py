"""One pass of ``NodeHost`` over its groups, as values the caller handles.

``Iteration`` is what ``NodeHost.prepare`` returns: the batch to write and the
messages to send, which it encodes into frames and hands out only after the
write (persist before send, enforced here; see ``take_early_frames`` for the
one kind of message that needs no persisting). ``IterationResult`` is what ``finish`` returns. Holds no logic
beyond that ordering rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from fastpaca.errors import InvariantViolation
from fastpaca.raft.codec import SnapshotChunk, SnapshotStatus, encode_frame
from fastpaca.raft.core import RaftNode
from fastpaca.raft.kv import KV, WriteBatch
from fastpaca.raft.leveldb import LevelDBStorage
from fastpaca.raft.messages import Entry, Message, ReadState
from fastpaca.raft.ready import Ready, SoftState

__all__ = ["AppliedBatch", "HostedGroup", "Iteration", "IterationResult", "ProcessedReady"]


# Not frozen (one per group per iteration; immutable by convention).
@dataclass(slots=True)
class AppliedBatch:
    """Entries of one group applied in one iteration, with one result each
    (a CONF_CHANGE entry's result is the new ``ConfState``)."""

    group_id: int
    entries: Sequence[Entry]
    results: list[Any]


@dataclass(slots=True)
class IterationResult:
    applied: list[AppliedBatch] = field(default_factory=list)
    read_states: list[tuple[int, ReadState]] = field(default_factory=list)
    soft_states: list[tuple[int, SoftState]] = field(default_factory=list)


class HostedGroup:
    __slots__ = ("compact_to", "core", "storage")

    def __init__(self, core: RaftNode, storage: LevelDBStorage) -> None:
        self.core = core
        self.storage = storage
        self.compact_to = 0
        """Index a compaction under way deletes up to, a chunk per apply
        (``HostConfig.compact_chunk_entries``); below the first index: none."""


class ProcessedReady(NamedTuple):
    group_id: int
    group: HostedGroup
    ready: Ready | None
    """None: the lone voter's shortcut (``RaftNode.ready_alone``), whose
    entries ``applied`` holds."""
    applied: AppliedBatch | None


class Iteration:
    """What one pass over all groups produced: a batch to write, then frames.

    Persist-before-send is enforced here: ``frames()`` raises until ``write()``
    returned. The one exception is ``take_early_frames()``: a leader's
    APPEND/HEARTBEAT messages of a term already durable acknowledge nothing,
    so they may leave before the write and the followers' fsync overlaps the
    leader's (Raft thesis §10.2.1); the leader still counts its own copy only
    once durable (``advance``). A caller that never takes them gets them in
    ``frames()`` instead, merged into the one frame per peer.
    """

    __slots__ = (
        "_chunks",
        "_early",
        "_kv",
        "_late",
        "_node_id",
        "_sealed",
        "_statuses",
        "_written",
        "batch",
        "bootstrapped",
        "message_counts",
        "must_sync",
        "readies",
    )

    def __init__(
        self,
        *,
        node_id: str,
        kv: KV,
        batch: WriteBatch,
        must_sync: bool,
        early: dict[str, list[Message]],
        late: dict[str, list[Message]],
        chunks: dict[str, list[SnapshotChunk]],
        statuses: dict[str, list[SnapshotStatus]],
        readies: list[ProcessedReady],
        bootstrapped: dict[int, LevelDBStorage],
    ) -> None:
        self._node_id = node_id
        self._kv = kv
        self.batch = batch
        self.must_sync = must_sync
        self._early = early
        self._late = late
        self._chunks = chunks
        self._statuses = statuses
        self.readies = readies
        self.bootstrapped = bootstrapped
        self._sealed: Callable[[], None] | None = None
        self._written = False
        self.message_counts: dict[str, int] = {}
        """Raft messages per peer in the frames handed out so far (stats)."""

    @property
    def is_empty(self) -> bool:
        return not (
            self.batch
            or self.readies
            or self.bootstrapped
            or self._early
            or self._late
            or self._chunks
            or self._statuses
        )

    @property
    def written(self) -> bool:
        return self._written

    def seal(self) -> None:
        """Turn the batch into the store's own form now, in the caller's
        thread (see ``KV.seal``): call it on the loop before handing
        ``write`` to a worker thread."""
        if self.batch and self._sealed is None:
            self._sealed = self._kv.seal(self.batch, sync=self.must_sync)

    def write(self) -> None:
        """Write the batch (fsync'd when ``must_sync``). Safe to call from one
        worker thread: it touches only the KV and this iteration's batch."""
        self.seal()
        if self._sealed is not None:
            self._sealed()
        self._written = True

    def take_early_frames(self) -> dict[str, bytes]:
        """Frames of leader traffic that may be sent before the write (see the
        class docstring); at most one per peer, each handed out once."""
        early, self._early = self._early, {}
        return {
            peer: self._encode(peer, messages, (), ()) for peer, messages in sorted(early.items())
        }

    def frames(self) -> dict[str, bytes]:
        """One frame per peer with everything else; only once the batch is
        durable. Handed out once: a second call returns nothing."""
        if not self._written:
            raise InvariantViolation("frames requested before the batch was written")
        messages, chunks, statuses = self._late, self._chunks, self._statuses
        for peer, early in self._early.items():
            messages[peer] = early + messages.get(peer, [])
        self._early, self._late, self._chunks, self._statuses = {}, {}, {}, {}
        peers = sorted(messages.keys() | chunks.keys() | statuses.keys())
        return {
            peer: self._encode(
                peer,
                messages.get(peer, ()),
                chunks.get(peer, ()),
                statuses.get(peer, ()),
            )
            for peer in peers
        }

    def _encode(
        self,
        peer: str,
        messages: Sequence[Message],
        chunks: Sequence[SnapshotChunk],
        statuses: Sequence[SnapshotStatus],
    ) -> bytes:
        self.message_counts[peer] = self.message_counts.get(peer, 0) + len(messages)
        return encode_frame(self._node_id, peer, messages, chunks, statuses)
