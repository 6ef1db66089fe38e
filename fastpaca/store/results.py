"""Values the state machine returns for each applied command.

A result is handed by the Raft driver to the proposer waiting on the entry.
Domain refusals are values too (``Rejected``), because apply is deterministic
and must not raise for a client's mistake; ``runtime.py`` turns them into the
errors of ``fastpaca/errors.py``.

Values here are immutable by convention, not ``frozen``: they are built on
every append, and a frozen slots dataclass costs ~2.5x as much to build
(``object.__setattr__`` per field). Never assign to a field once built.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from fastpaca.store.state import ConversationState

__all__ = [
    "AppendApplied",
    "AppendedItem",
    "ArchiveAcked",
    "ConversationApplied",
    "RejectReason",
    "Rejected",
    "TombstoneApplied",
]


@dataclass(slots=True, kw_only=True)
class AppendedItem:
    seq: int
    version: int
    token_count: int


@dataclass(slots=True, kw_only=True)
class AppendApplied:
    items: tuple[AppendedItem, ...]
    deduped: bool = False


@dataclass(slots=True, kw_only=True)
class ConversationApplied:
    conversation_id: str
    state: ConversationState
    metadata_json: bytes
    created: bool


@dataclass(slots=True, kw_only=True)
class TombstoneApplied:
    conversation_id: str


@dataclass(slots=True, kw_only=True)
class ArchiveAcked:
    archived_seq: int
    trimmed: int = 0
    """Messages this ack removed from the Raft state (see ``fsm._trim``)."""


class RejectReason(enum.Enum):
    NOT_FOUND = "not_found"
    TOMBSTONED = "tombstoned"
    VERSION_MISMATCH = "version_mismatch"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    BAD_COMMAND = "bad_command"


@dataclass(slots=True, kw_only=True)
class Rejected:
    reason: RejectReason
    current_version: int = 0
    detail: str = ""
