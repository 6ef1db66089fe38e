"""The read side of a group's stable Raft log, as the core sees it.

``LogStorage`` is the narrow interface ``core.py`` reads through. The core
never writes: the IO layer persists each ``Ready`` (see ``ready.py``) through
the implementation's own write methods, and the core learns of the result in
``advance``. Two implementations exist: ``MemoryStorage`` here (tests and the
simulator) and ``LevelDBStorage`` in ``leveldb.py`` (production).

Index conventions: the log holds entries ``[first_index(), last_index()]``.
Everything at or below ``first_index() - 1`` is compacted into the latest
snapshot, whose index and term ``term(first_index() - 1)`` still answers. An
empty log has ``first_index() == snapshot.index + 1`` and
``last_index() == snapshot.index``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from fastpaca.errors import InvariantViolation
from fastpaca.raft.messages import ConfState, Entry, HardState, SnapshotMeta

__all__ = [
    "CompactedError",
    "LogStorage",
    "MemoryStorage",
    "UnavailableError",
    "limit_entry_bytes",
]


class CompactedError(Exception):
    """Raised by ``entries``/``term`` for an index below ``first_index() - 1``:
    it was folded into a snapshot, so the caller must send a snapshot instead."""


class UnavailableError(Exception):
    """Raised by ``entries``/``term`` for an index above ``last_index()``."""


class LogStorage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the membership last applied (or
        installed by snapshot, or bootstrapped)."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``. With ``max_bytes`` the result is cut so its
        data totals at most that, but always holds at least one entry when the
        range is non-empty. Raises ``CompactedError``/``UnavailableError``."""
        ...

    def term(self, index: int) -> int:
        """Term of entry ``index``; valid for ``first_index() - 1 <= index <=
        last_index()``. Raises ``CompactedError``/``UnavailableError``."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot_meta(self) -> SnapshotMeta:
        """Metadata of the latest snapshot (index 0 when there is none). The
        IO layer produces the data and may send a newer state than this (see
        ``MessageType.SNAPSHOT``)."""
        ...


class MemoryStorage:
    """In-memory ``LogStorage`` with the write side the IO layer needs.

    The reference implementation: tests and the simulator persist each
    ``Ready`` through ``apply_snapshot``/``append``/``set_hard_state`` and
    compact with ``compact``. Holds ``_entries[0]`` as a dummy entry standing
    for the snapshot (its index and term), so ``term(first_index() - 1)``
    always answers.
    """

    def __init__(
        self,
        *,
        conf_state: ConfState | None = None,
        hard_state: HardState | None = None,
    ) -> None:
        self._hard_state = hard_state or HardState()
        self._conf_state = conf_state or ConfState()
        self._snapshot = SnapshotMeta()
        self._entries: list[Entry] = [Entry(index=0, term=0)]

    # --- read side (LogStorage) -------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._conf_state

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (first index {offset + 1})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"index {hi - 1} is beyond last index {self.last_index()}")
        selected = self._entries[lo - offset : hi - offset]
        return limit_entry_bytes(selected, max_bytes)

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise CompactedError(f"index {index} is compacted (first index {offset + 1})")
        if index > self.last_index():
            raise UnavailableError(f"index {index} is beyond last index {self.last_index()}")
        return self._entries[index - offset].term

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot

    # --- write side (the IO layer) ------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    @property
    def conf_state(self) -> ConfState:
        return self._conf_state

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def set_conf_state(self, conf_state: ConfState) -> None:
        self._conf_state = conf_state

    def append(self, entries: list[Entry]) -> None:
        """Append ``entries``; one at or below the last index first truncates
        the log from its index on (a follower resolving a conflict)."""
        if not entries:
            return
        first = entries[0].index
        offset = self._entries[0].index
        if first <= offset:
            # The part below the snapshot is already committed and compacted.
            entries = entries[offset + 1 - first :]
            if not entries:
                return
            first = entries[0].index
        if first > self.last_index() + 1:
            raise InvariantViolation(
                f"log gap: appending index {first} after last index {self.last_index()}"
            )
        del self._entries[first - offset :]
        self._entries.extend(entries)

    def apply_snapshot(self, meta: SnapshotMeta) -> None:
        """Install a snapshot: the log restarts right after ``meta.index``."""
        if meta.index < self._snapshot.index:
            raise InvariantViolation(
                f"snapshot {meta.index} is older than installed snapshot {self._snapshot.index}"
            )
        self._snapshot = meta
        self._conf_state = meta.conf_state
        self._entries = [Entry(index=meta.index, term=meta.term)]
        if self._hard_state.commit < meta.index:
            self._hard_state = replace(self._hard_state, commit=meta.index)

    def compact(self, index: int, conf_state: ConfState | None = None) -> None:
        """Drop entries up to and including ``index`` (the state machine has a
        snapshot there); the snapshot meta records ``conf_state`` (default:
        the current membership)."""
        offset = self._entries[0].index
        if index <= offset:
            raise CompactedError(f"index {index} is already compacted")
        assert index <= self.last_index(), f"compact {index} beyond last {self.last_index()}"
        term = self._entries[index - offset].term
        self._snapshot = SnapshotMeta(
            index=index, term=term, conf_state=conf_state or self._conf_state
        )
        self._entries = [Entry(index=index, term=term), *self._entries[index - offset + 1 :]]


def limit_entry_bytes(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``entries`` whose data totals at most
    ``max_bytes``, but never less than one entry."""
    if max_bytes is None or not entries:
        return entries
    total = 0
    for count, entry in enumerate(entries):
        total += len(entry.data)
        if total > max_bytes and count > 0:
            return entries[:count]
    return entries
