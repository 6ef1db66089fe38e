"""What the Raft driver needs from the state machine it replicates.

The contract (after hashicorp/raft's FSM, adapted to our shared LevelDB):

* ``apply`` is deterministic: the same entries on the same state give the same
  writes and results on every replica. It performs no IO of its own; its
  writes go into the iteration's ``WriteBatch`` and it must record the new
  applied index there too, so state and applied index land atomically.
* ``snapshot`` must return quickly: it only pins a consistent view (a LevelDB
  snapshot). Producing the chunks is the slow part and happens as they are
  streamed to a follower.
* ``restore`` throws away the group's previous state and replaces it with the
  snapshot's, again only through the batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from fastpaca.raft.kv import WriteBatch
from fastpaca.raft.messages import Entry

__all__ = ["StateMachine", "StateSnapshot"]


class StateSnapshot(Protocol):
    @property
    def applied_index(self) -> int:
        """The snapshot holds the state after applying entries ``<= applied_index``."""
        ...

    def chunks(self, chunk_bytes: int) -> Iterator[bytes]:
        """The state as a sequence of opaque chunks of about ``chunk_bytes`` each."""
        ...


class StateMachine(Protocol):
    def applied_index(self, group_id: int) -> int:
        """Last applied index of the group on durable state (0 if none)."""
        ...

    def apply(self, group_id: int, entries: Sequence[Entry], batch: WriteBatch) -> list[Any]:
        """Apply committed entries in order, one result per entry (``None`` for
        the empty no-op and conf-change entries, whose only effect is to move
        the applied index). Results are handed to the waiting proposers."""
        ...

    def snapshot(self, group_id: int) -> StateSnapshot: ...

    def restore(
        self, group_id: int, applied_index: int, chunks: Iterable[bytes], batch: WriteBatch
    ) -> None: ...
