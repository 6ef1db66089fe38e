"""RaftLog: one group's log as the core sees it, stable plus unstable.

Owns the in-memory tail not yet on stable storage (entries and at most one
incoming snapshot), the commit index, and what has been handed out to apply.
Reads fall through to ``LogStorage`` below the unstable tail. It performs no
IO itself: the IO layer persists what ``next_unstable_*`` hands out, and the
core reports that back through ``stable_to``/``stable_snapshot_to``.

Must not know about roles, messages or progress (that is ``core.py``).
"""

from __future__ import annotations

from fastpaca.errors import InvariantViolation
from fastpaca.raft.messages import Entry, SnapshotMeta
from fastpaca.raft.storage import CompactedError, LogStorage, UnavailableError, limit_entry_bytes

__all__ = ["RaftLog"]


class RaftLog:
    def __init__(self, storage: LogStorage, *, committed: int, applied: int) -> None:
        self.storage = storage
        self._unstable: list[Entry] = []
        self._offset = storage.last_index() + 1
        """Index of ``_unstable[0]``; always ``stable last index + 1`` when empty."""
        self._offset_in_progress = self._offset
        """Unstable entries below this were handed to the IO layer already."""
        self._snapshot: SnapshotMeta | None = None
        self._snapshot_in_progress = False
        first = storage.first_index()
        self.applied = max(applied, first - 1)
        # A commit-only hard state change is not fsync'd, so after a crash the
        # stored commit may trail what the state machine already applied:
        # anything applied was committed.
        self.committed = max(committed, self.applied)
        self.applying = self.applied
        """Highest index handed out to apply (>= ``applied`` until advance)."""
        if self.committed > self.last_index():
            raise InvariantViolation(
                f"commit {self.committed} beyond last index {self.last_index()}"
            )

    # --- reads --------------------------------------------------------------------

    def first_index(self) -> int:
        if self._snapshot is not None:
            return self._snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self._unstable:
            return self._offset + len(self._unstable) - 1
        if self._snapshot is not None:
            return self._snapshot.index
        return self.storage.last_index()

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, index: int) -> int:
        """Term of ``index``; raises ``CompactedError``/``UnavailableError``."""
        if self._unstable and index >= self._offset:
            position = index - self._offset
            if position >= len(self._unstable):
                raise UnavailableError(f"index {index} beyond last {self.last_index()}")
            return self._unstable[position].term
        if self._snapshot is not None:
            if index == self._snapshot.index:
                return self._snapshot.term
            if index < self._snapshot.index:
                raise CompactedError(f"index {index} is below snapshot {self._snapshot.index}")
            raise UnavailableError(f"index {index} beyond last {self.last_index()}")
        if index >= self._offset:
            raise UnavailableError(f"index {index} beyond last {self.last_index()}")
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except (CompactedError, UnavailableError):
            return 0

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (CompactedError, UnavailableError):
            return False

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``, at most ``max_bytes`` of data but at least
        one; raises ``CompactedError`` below the first index."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(f"index {lo} is compacted (first {self.first_index()})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"index {hi - 1} beyond last {self.last_index()}")
        result: list[Entry] = []
        if lo < self._offset:
            stable_hi = min(hi, self._offset)
            result = self.storage.entries(lo, stable_hi, max_bytes)
            if len(result) < stable_hi - lo or hi <= self._offset:
                return result
        unstable_lo = max(lo, self._offset) - self._offset
        unstable = self._unstable[unstable_lo : hi - self._offset]
        if not result:
            return limit_entry_bytes(unstable, max_bytes)
        used = sum(len(entry.data) for entry in result)
        remaining = None if max_bytes is None else max_bytes - used
        if remaining is not None and remaining < len(unstable[0].data):
            return result
        return result + limit_entry_bytes(unstable, remaining)

    def snapshot_meta(self) -> SnapshotMeta:
        if self._snapshot is not None:
            return self._snapshot
        return self.storage.snapshot_meta()

    def is_up_to_date(self, last_index: int, last_term: int, *, strictly: bool = False) -> bool:
        """§5.4.1: a candidate's log is at least as up to date as ours
        (``strictly``: more up to date)."""
        our_term = self.last_term()
        if last_term != our_term:
            return last_term > our_term
        our_index = self.last_index()
        return last_index > our_index if strictly else last_index >= our_index

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= ``index`` whose term is <= ``term`` (or the
        first index - 1): where a leader's and a follower's logs may agree."""
        first = self.first_index()
        while index >= first:
            our_term = self.term_or_zero(index)
            if our_term <= term:
                return index
            index -= 1
        return index

    # --- writes -------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> int:
        """Append (truncating the tail from the first entry's index); returns
        the new last index."""
        if not entries:
            return self.last_index()
        first = entries[0].index
        if first <= self.committed:
            raise InvariantViolation(f"truncating committed index {first} <= {self.committed}")
        if first > self.last_index() + 1:
            raise InvariantViolation(f"log gap: append {first} after {self.last_index()}")
        if first == self._offset + len(self._unstable):
            self._unstable.extend(entries)
        elif first <= self._offset:
            self._offset = first
            self._unstable = list(entries)
        else:
            del self._unstable[first - self._offset :]
            self._unstable.extend(entries)
        self._offset_in_progress = min(self._offset_in_progress, first)
        return self.last_index()

    def maybe_append(
        self, index: int, log_term: int, commit: int, entries: tuple[Entry, ...]
    ) -> int | None:
        """AppendEntries receiver (§5.3): returns the last new index, or None
        when the log does not contain ``(index, log_term)``."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        conflict = self._find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                raise InvariantViolation(f"conflict at committed index {conflict}")
            self.append(list(entries[conflict - entries[0].index :]))
        self.commit_to(min(commit, last_new))
        return last_new

    def _find_conflict(self, entries: tuple[Entry, ...]) -> int:
        """Index of the first entry not already in the log (0: none)."""
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def commit_to(self, commit: int) -> bool:
        if commit <= self.committed:
            return False
        if commit > self.last_index():
            raise InvariantViolation(f"commit {commit} beyond last index {self.last_index()}")
        self.committed = commit
        return True

    def restore(self, meta: SnapshotMeta) -> None:
        """Reset the log to an incoming snapshot (installed by the IO layer)."""
        self._snapshot = meta
        self._snapshot_in_progress = False
        self._unstable = []
        self._offset = meta.index + 1
        self._offset_in_progress = self._offset
        self.committed = meta.index
        self.applying = max(self.applying, meta.index)

    # --- handing out to the IO layer ----------------------------------------------

    def has_next_unstable(self) -> bool:
        return self._offset_in_progress < self._offset + len(self._unstable) or (
            self._snapshot is not None and not self._snapshot_in_progress
        )

    def next_unstable_entries(self) -> list[Entry]:
        start = self._offset_in_progress - self._offset
        entries = self._unstable[start:]
        self._offset_in_progress = self._offset + len(self._unstable)
        return entries

    def take_entries_after_commit(self) -> list[Entry]:
        """The unstable entries not handed out yet, marked handed out, when
        they are all there is to do: they follow the commit index directly,
        everything committed was handed out to apply, and no snapshot waits.
        Empty otherwise, and nothing changes. The lone voter's shortcut
        (``RaftNode.ready_alone``) commits exactly these."""
        if (
            self._snapshot is not None
            or self.applying != self.committed
            or self._offset_in_progress != self.committed + 1
        ):
            return []
        entries = self._unstable[self._offset_in_progress - self._offset :]
        self._offset_in_progress += len(entries)
        return entries

    def next_unstable_snapshot(self) -> SnapshotMeta | None:
        if self._snapshot is None or self._snapshot_in_progress:
            return None
        self._snapshot_in_progress = True
        return self._snapshot

    def stable_to(self, index: int, term: int) -> bool:
        """Entries up to ``(index, term)`` are durable; False when the tail was
        rewritten meanwhile (they stay unstable until a later write)."""
        if index < self._offset or not self.match_term(index, term):
            return False
        del self._unstable[: index + 1 - self._offset]
        self._offset = index + 1
        self._offset_in_progress = max(self._offset_in_progress, self._offset)
        return True

    def stable_snapshot_to(self, index: int) -> None:
        if self._snapshot is not None and self._snapshot.index == index:
            self._snapshot = None
            self._snapshot_in_progress = False

    def stable_last_index(self) -> int:
        """Highest index known durable (in storage, not just in memory)."""
        if self._snapshot is not None:
            return 0  # the old log is being replaced: nothing below counts yet
        return min(self._offset - 1, self.storage.last_index())

    def has_next_committed(self) -> bool:
        return self.applying < self.committed

    def next_committed_entries(self, max_bytes: int) -> list[Entry]:
        if self.applying >= self.committed:
            return []
        entries = self.entries(self.applying + 1, self.committed + 1, max_bytes)
        self.applying = entries[-1].index
        return entries

    def applied_to(self, index: int) -> None:
        if index > self.committed:
            raise InvariantViolation(f"applied {index} beyond commit {self.committed}")
        self.applied = max(self.applied, index)
        self.applying = max(self.applying, self.applied)
