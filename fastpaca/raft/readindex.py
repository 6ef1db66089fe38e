"""ReadIndex: linearizable reads without writing the log (Raft thesis §6.4).

``ReadIndexQueue`` holds the pending requests, each pinned to the commit
index at the time it was made, with the voters that acknowledged the
heartbeat round confirming leadership for it. ``ReadIndexMixin`` is the part
of ``RaftNode`` that takes requests (local or forwarded by a follower), waits
for an entry of the leader's term to commit, and answers with a
``ReadState`` or a READ_INDEX_RESP. No IO.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastpaca.errors import NotLeader
from fastpaca.raft.messages import Message, MessageType, ReadState
from fastpaca.raft.node_state import NodeState
from fastpaca.raft.ready import Role

__all__ = ["PendingRead", "ReadIndexMixin", "ReadIndexQueue"]


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


class ReadIndexMixin(NodeState):
    def read_index(self, context: bytes) -> None:
        """Request a linearizable read point; answered as a ``ReadState``."""
        if self._role is Role.LEADER:
            self._queue_read(PendingRead(index=0, context=context, requester=self._id))
        elif self._leader_id is not None and self._role is Role.FOLLOWER:
            self._send(MessageType.READ_INDEX, self._leader_id, context=context)
        else:
            raise NotLeader(self._group_id, None)

    def _handle_read_index_request(self, msg: Message) -> None:
        self._queue_read(PendingRead(index=0, context=msg.context, requester=msg.sender))

    def _queue_read(self, read: PendingRead) -> None:
        if not self._committed_in_current_term():
            # Our commit index may lag the true one until an entry of our term
            # commits (thesis §6.4 step 1): hold the read until then.
            self._reads_waiting_commit.append(read)
            return
        read.index = self._log.committed
        self._start_read(read)

    def _start_read(self, read: PendingRead) -> None:
        if self._tracker.voters == frozenset((self._id,)):
            self._answer_read(read)
            return
        read.acks.add(self._id)
        if self._reads.add(read):
            self._read_heartbeat_pending = True

    def _answer_read(self, read: PendingRead) -> None:
        if read.requester == self._id:
            self._read_states.append(ReadState(index=read.index, context=read.context))
        else:
            self._send(
                MessageType.READ_INDEX_RESP, read.requester, index=read.index, context=read.context
            )
