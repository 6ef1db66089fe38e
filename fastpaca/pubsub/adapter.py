"""What ``app.py`` needs of a pub/sub adapter (cluster or Redis)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fastpaca.pubsub.stats import PubSubStats
from fastpaca.store.effects import Effect

__all__ = ["PubSubAdapter"]


class PubSubAdapter(Protocol):
    """An ``EffectSink`` that gets stream events to subscribers on other nodes.

    ``start`` runs before the peer transport starts and ``stop`` after the
    Raft driver stopped; neither may raise for an unreachable peer or broker
    (fan-out is best effort: subscribers replay what they missed)."""

    stats: PubSubStats

    def __call__(self, group_id: int, effects: Sequence[Effect]) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
