"""ReadIndex bookkeeping for a leader (Raft thesis §6.4).

Owns the queue of pending read requests, each pinned to the commit index at
the time it was made, and which voters have acknowledged the heartbeat round
that confirms leadership for it. It sends nothing and knows no quorum rule:
``core.py`` asks it questions and does the sending.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PendingRead", "ReadIndexQueue"]


@dataclass(slots=True, kw_only=True)
class PendingRead:
    index: int
    context: bytes
    requester: str
    """Node that asked: the leader itself, or a follower to answer remotely."""
    acks: set[str] = field(default_factory=set)


class ReadIndexQueue:
    """Pending reads in request order. A heartbeat answer for a later
    request confirms leadership for every earlier one as well, because the
    round it answers started after all of them were queued."""

    def __init__(self) -> None:
        self._by_context: dict[bytes, PendingRead] = {}
        self._order: list[bytes] = []

    def __len__(self) -> int:
        return len(self._order)

    def add(self, read: PendingRead) -> bool:
        """Queue ``read``; False when its context is already pending."""
        if read.context in self._by_context:
            return False
        self._by_context[read.context] = read
        self._order.append(read.context)
        return True

    def last_context(self) -> bytes | None:
        return self._order[-1] if self._order else None

    def ack(self, context: bytes, node_id: str) -> set[str] | None:
        """Record ``node_id``'s ack; returns the acks so far (None: unknown)."""
        read = self._by_context.get(context)
        if read is None:
            return None
        read.acks.add(node_id)
        return read.acks

    def release_through(self, context: bytes) -> list[PendingRead]:
        """Remove and return every read up to and including ``context``."""
        if context not in self._by_context:
            return []
        position = self._order.index(context)
        released = [self._by_context.pop(c) for c in self._order[: position + 1]]
        del self._order[: position + 1]
        return released

    def clear(self) -> None:
        self._by_context.clear()
        self._order.clear()
