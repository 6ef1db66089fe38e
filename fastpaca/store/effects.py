"""What applying a command caused, for the subsystems that react to it.

The state machine returns these values; it never performs them. Whoever owns
the node (``store/runtime.py``) hands them to pub/sub and the archive. Delivery
is at-least-once: consumers dedupe on ``(conversation_id, seq)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Appended", "Effect", "EffectSink", "Tombstoned"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Appended:
    conversation_id: str
    seq: int
    version: int
    message: bytes
    """The stored message JSON (role, parts, metadata, token_count, inserted_at)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Tombstoned:
    conversation_id: str


Effect = Appended | Tombstoned

EffectSink = Callable[[int, Sequence[Effect]], None]
"""Called with (group id, effects of one ``apply`` call, in log order)."""
