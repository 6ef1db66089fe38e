"""Reads of the applied state straight from LevelDB.

Owns how a conversation, a tail page and a replay page are found in the key
layout. It never writes and never waits: linearizability (the read barrier)
is the caller's job (``runtime.py``), which calls these after the barrier.

Values here are immutable by convention, not ``frozen``: they are built on
every append, and a frozen slots dataclass costs ~2.5x as much to build
(``object.__setattr__`` per field). Never assign to a field once built.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fastpaca.raft.kv import KVView
from fastpaca.store import keys
from fastpaca.store.state import ConversationState

__all__ = ["ConversationView", "StoreReader", "StoredMessage", "replay_bounds", "tail_bounds"]


@dataclass(slots=True, kw_only=True)
class ConversationView:
    conversation_id: str
    state: ConversationState
    metadata_json: bytes


@dataclass(slots=True, kw_only=True)
class StoredMessage:
    seq: int
    body: bytes
    """JSON object: role, parts, metadata, token_count, inserted_at (no seq)."""


def tail_bounds(last_seq: int, *, limit: int, offset: int) -> tuple[int, int]:
    """``(lo_seq, hi_seq)`` of a tail page, inclusive; empty when ``hi < lo``."""
    hi_seq = last_seq - offset
    return max(1, hi_seq - limit + 1), hi_seq


def replay_bounds(last_seq: int, *, from_seq: int, limit: int) -> tuple[int, int]:
    """``(lo_seq, hi_seq)`` of a replay page, inclusive; empty when ``hi < lo``."""
    lo_seq = max(1, from_seq)
    return lo_seq, min(last_seq, lo_seq + limit - 1)


class StoreReader:
    """Point reads and range scans of one node's applied state."""

    def __init__(self, kv: KVView) -> None:
        self._kv = kv

    def state(self, group_id: int, conversation_id: str) -> ConversationState | None:
        """The counters alone (what a message read needs), without the metadata."""
        raw = self._kv.get(keys.conversation_key(group_id, conversation_id))
        return None if raw is None else ConversationState.decode(raw)

    def conversation(self, group_id: int, conversation_id: str) -> ConversationView | None:
        raw = self._kv.get(keys.conversation_key(group_id, conversation_id))
        if raw is None:
            return None
        metadata = self._kv.get(keys.metadata_key(group_id, conversation_id))
        return ConversationView(
            conversation_id=conversation_id,
            state=ConversationState.decode(raw),
            metadata_json=b"{}" if metadata is None else metadata,
        )

    def tail(
        self, group_id: int, conversation_id: str, last_seq: int, *, limit: int, offset: int
    ) -> list[StoredMessage]:
        """Skip the ``offset`` newest messages, then up to ``limit`` older
        ones, returned oldest first. Messages trimmed by the archive are
        missing from the start of the page (``runtime.py`` reads them back)."""
        lo_seq, hi_seq = tail_bounds(last_seq, limit=limit, offset=offset)
        if hi_seq < lo_seq:
            return []
        return self._range(group_id, conversation_id, lo_seq, hi_seq)

    def replay(
        self, group_id: int, conversation_id: str, last_seq: int, *, from_seq: int, limit: int
    ) -> list[StoredMessage]:
        """Messages with ``seq >= from_seq``, ascending, at most ``limit``
        (trimmed ones missing from the start, as for ``tail``)."""
        lo_seq, hi_seq = replay_bounds(last_seq, from_seq=from_seq, limit=limit)
        if hi_seq < lo_seq:
            return []
        return self._range(group_id, conversation_id, lo_seq, hi_seq)

    def conversation_states(self, group_id: int) -> Iterator[tuple[str, ConversationState]]:
        """Every conversation of the group with its counters, in key order
        (the archive's rebuild of what is pending after a leader change)."""
        start, stop = keys.conversation_range(group_id)
        for key, value in self._kv.iterate(start, stop):
            yield keys.conversation_id_of_key(key), ConversationState.decode(value)

    def _range(
        self, group_id: int, conversation_id: str, lo_seq: int, hi_seq: int
    ) -> list[StoredMessage]:
        start, stop = keys.message_range(group_id, conversation_id, lo_seq, hi_seq + 1)
        return [
            StoredMessage(seq=keys.seq_of_message_key(key), body=value)
            for key, value in self._kv.iterate(start, stop)
        ]
