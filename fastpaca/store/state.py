"""Values of the applied state and their fixed binary encodings.

Owns the shape and bytes of what the state machine stores per conversation
(``ConversationState``, ``IdempotencyRecord``) and the one timestamp format of
the API. It performs no IO and decides nothing: ``fsm.py`` decides,
``keys.py`` says where each value lives.

Counters live apart from the conversation's metadata so an append rewrites a
small fixed-size value, never the (possibly large) metadata object.

Values here are immutable by convention, not ``frozen``: they are built on
every append, and a frozen slots dataclass costs ~2.5x as much to build
(``object.__setattr__`` per field). Never assign to a field once built.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from fastpaca.errors import InvariantViolation

__all__ = [
    "ConversationState",
    "IdempotencyRecord",
    "format_timestamp",
]

# version, last_seq, archived_seq, idempotency_floor_version, created_ms, updated_ms, tombstoned
_STATE = struct.Struct(">QQQQQQB")
# digest(16), first_seq, version, message count
_IDEM_HEAD = struct.Struct(">16sQQI")


@dataclass(slots=True, kw_only=True)
class ConversationState:
    """Counters of one conversation. ``version`` counts appends, ``last_seq``
    messages; ``idempotency_floor_version`` is the oldest append version whose
    idempotency key may still be stored (see ``fsm._evict_idempotency_keys``)."""

    version: int = 0
    last_seq: int = 0
    archived_seq: int = 0
    idempotency_floor_version: int = 0
    created_ms: int = 0
    updated_ms: int = 0
    tombstoned: bool = False

    def encode(self) -> bytes:
        return _STATE.pack(
            self.version,
            self.last_seq,
            self.archived_seq,
            self.idempotency_floor_version,
            self.created_ms,
            self.updated_ms,
            1 if self.tombstoned else 0,
        )

    @classmethod
    def decode(cls, raw: bytes) -> ConversationState:
        if len(raw) != _STATE.size:
            raise InvariantViolation(f"conversation state of {len(raw)} bytes")
        version, last_seq, archived_seq, floor, created_ms, updated_ms, tomb = _STATE.unpack(raw)
        return cls(
            version=version,
            last_seq=last_seq,
            archived_seq=archived_seq,
            idempotency_floor_version=floor,
            created_ms=created_ms,
            updated_ms=updated_ms,
            tombstoned=tomb == 1,
        )


@dataclass(slots=True, kw_only=True)
class IdempotencyRecord:
    """What an append with an idempotency key produced, so a retry can be
    answered with the original reply. ``request_digest`` identifies the
    request's messages; a retry with another digest is a conflict."""

    request_digest: bytes
    first_seq: int
    version: int
    token_counts: tuple[int, ...]

    def encode(self) -> bytes:
        counts = self.token_counts
        head = _IDEM_HEAD.pack(self.request_digest, self.first_seq, self.version, len(counts))
        return head + _tokens(len(counts)).pack(*counts)

    @classmethod
    def decode(cls, raw: bytes) -> IdempotencyRecord:
        digest, first_seq, version, count = _IDEM_HEAD.unpack_from(raw)
        tokens_format = _tokens(count)
        if len(raw) != _IDEM_HEAD.size + tokens_format.size:
            raise InvariantViolation(f"idempotency record of {len(raw)} bytes for {count} messages")
        tokens = tokens_format.unpack_from(raw, _IDEM_HEAD.size)
        return cls(request_digest=digest, first_seq=first_seq, version=version, token_counts=tokens)


@functools.lru_cache(maxsize=64)
def _tokens(count: int) -> struct.Struct:
    """The token counts of a record of ``count`` messages (cached: nearly
    every append has one)."""
    return struct.Struct(f">{count}I")


def format_timestamp(epoch_ms: int) -> str:
    """ISO 8601 UTC with second precision, e.g. ``2026-02-02T12:00:00Z``."""
    return _format_second(epoch_ms // 1000)


@functools.lru_cache(maxsize=256)
def _format_second(epoch_s: int) -> str:
    # Cached: consecutive appends mostly fall in the same second.
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
