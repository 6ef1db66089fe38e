"""Values the state machine returns for each applied command.

A result is handed by the Raft driver to the proposer waiting on the entry.
Domain refusals are values too (``Rejected``), because apply is deterministic
and must not raise for a client's mistake; ``runtime.py`` turns them into the
errors of ``fastpaca/errors.py``.
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


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendedItem:
    seq: int
    version: int
    token_count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendApplied:
    items: tuple[AppendedItem, ...]
    deduped: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationApplied:
    conversation_id: str
    state: ConversationState
    metadata_json: bytes
    created: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TombstoneApplied:
    conversation_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveAcked:
    archived_seq: int


class RejectReason(enum.Enum):
    NOT_FOUND = "not_found"
    TOMBSTONED = "tombstoned"
    VERSION_MISMATCH = "version_mismatch"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    BAD_COMMAND = "bad_command"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    reason: RejectReason
    current_version: int = 0
    detail: str = ""
