"""One pass of ``NodeHost`` over its groups, as values the caller handles.

``Iteration`` is what ``NodeHost.prepare`` returns: the batch to write and the
frames to send, which it hands out only after the write (persist before send,
enforced here). ``IterationResult`` is what ``finish`` returns. Holds no logic
beyond that ordering rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from fastpaca.errors import InvariantViolation
from fastpaca.raft.core import RaftNode
from fastpaca.raft.kv import KV, WriteBatch
from fastpaca.raft.leveldb import LevelDBStorage
from fastpaca.raft.messages import Entry, ReadState
from fastpaca.raft.ready import Ready, SoftState

__all__ = ["AppliedBatch", "HostedGroup", "Iteration", "IterationResult", "ProcessedReady"]


@dataclass(frozen=True, slots=True)
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
    __slots__ = ("core", "storage")

    def __init__(self, core: RaftNode, storage: LevelDBStorage) -> None:
        self.core = core
        self.storage = storage


class ProcessedReady(NamedTuple):
    group_id: int
    group: HostedGroup
    ready: Ready
    applied: AppliedBatch | None


class Iteration:
    """What one pass over all groups produced: a batch to write, then frames."""

    __slots__ = (
        "_frames",
        "_kv",
        "_written",
        "batch",
        "bootstrapped",
        "message_counts",
        "must_sync",
        "readies",
    )

    def __init__(
        self,
        kv: KV,
        batch: WriteBatch,
        must_sync: bool,
        frames: dict[str, bytes],
        readies: list[ProcessedReady],
        bootstrapped: dict[int, LevelDBStorage],
    ) -> None:
        self._kv = kv
        self.batch = batch
        self.must_sync = must_sync
        self._frames = frames
        self.message_counts: dict[str, int] = {}
        """Raft messages per peer in this iteration's frames (stats)."""
        self.readies = readies
        self.bootstrapped = bootstrapped
        self._written = False

    @property
    def is_empty(self) -> bool:
        return not (self.batch or self._frames or self.readies or self.bootstrapped)

    @property
    def written(self) -> bool:
        return self._written

    def write(self) -> None:
        """Write the batch (fsync'd when ``must_sync``). Safe to call from one
        worker thread: it touches only the KV and this iteration."""
        if self.batch:
            self._kv.write(self.batch, sync=self.must_sync)
        self._written = True

    def frames(self) -> dict[str, bytes]:
        """One frame per peer; only once the batch is durable."""
        if not self._written:
            raise InvariantViolation("frames requested before the batch was written")
        return self._frames
