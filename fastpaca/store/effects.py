"""What applying a command caused, for the subsystems that react to it.

The state machine returns these values; it never performs them. Whoever owns
the node (``store/runtime.py``) hands them to pub/sub and the archive. Delivery
is at-least-once: consumers dedupe on ``(conversation_id, seq)``.

Values here are immutable by convention, not ``frozen``: they are built on
every append, and a frozen slots dataclass costs ~2.5x as much to build
(``object.__setattr__`` per field). Never assign to a field once built.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_log = logging.getLogger(__name__)

__all__ = ["Appended", "Effect", "EffectHub", "EffectSink", "Tombstoned"]


@dataclass(slots=True, kw_only=True)
class Appended:
    conversation_id: str
    seq: int
    version: int
    message: bytes
    """The stored message JSON (role, parts, metadata, token_count, inserted_at)."""


@dataclass(slots=True, kw_only=True)
class Tombstoned:
    conversation_id: str


Effect = Appended | Tombstoned

EffectSink = Callable[[int, Sequence[Effect]], None]
"""Called with (group id, effects of one ``apply`` call, in log order)."""


class EffectHub:
    """The state machine's ``EffectSink``. It holds each apply's effects until
    the Raft driver reports the write holding that apply durable
    (``release``), then hands them to every listener (pub/sub, archive), in
    apply order. Holding them matters because an apply can share its write
    with the entries it applies (a node alone commits an entry by its own
    write): no subscriber may see a message a crash could still take back.

    Listeners must not block: they run inside the Raft driver's iteration. A
    failing listener is logged, never propagated, so it cannot stop the
    apply path."""

    def __init__(self) -> None:
        self._listeners: list[EffectSink] = []
        self._held: list[tuple[int, Sequence[Effect]]] = []

    def add_listener(self, listener: EffectSink) -> None:
        self._listeners.append(listener)

    def __call__(self, group_id: int, effects: Sequence[Effect]) -> None:
        self._held.append((group_id, effects))

    def release(self) -> None:
        """Everything applied so far is durable: deliver it."""
        if not self._held:
            return
        held, self._held = self._held, []
        for group_id, effects in held:
            for listener in self._listeners:
                try:
                    listener(group_id, effects)
                except Exception:
                    _log.exception(
                        "effect listener failed", extra={"type": "effects.listener_error"}
                    )
