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

from typing import Protocol

from fastpaca.raft.messages import ConfState, Entry, HardState, SnapshotMeta

__all__ = ["CompactedError", "LogStorage", "UnavailableError"]


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
