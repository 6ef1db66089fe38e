"""Simulated network: per-link latency, loss, duplication, reordering, partitions.

Owns what happens to a payload between ``send`` and delivery. Payloads are
opaque (core ``Message`` lists at level 1, encoded frames at level 2). All
randomness comes from the simulator's rng, in call order, so a seed replays.
It must not know about Raft or decide whether the receiver is up: the
simulator drops deliveries to crashed nodes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .events import EventQueue
from .params import SimParams

__all__ = ["NetworkStats", "SimNetwork"]

Deliver = Callable[[str, str, object], None]
"""Called with (sender, receiver, payload) when a payload arrives."""


@dataclass(slots=True)
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    cut: int = 0
    """Lost to a partition, at send or while in flight."""


class SimNetwork:
    def __init__(
        self, params: SimParams, rng: random.Random, queue: EventQueue, deliver: Deliver
    ) -> None:
        self._params = params
        self._rng = rng
        self._queue = queue
        self._deliver = deliver
        self._blocked: set[tuple[str, str]] = set()
        self.faults_enabled = True
        self.stats = NetworkStats()

    # --- partitions --------------------------------------------------------

    def block(self, links: Iterable[tuple[str, str]]) -> None:
        """Cut the given directed links (a one-way partition is one direction)."""
        self._blocked.update(links)

    def split(self, side: Iterable[str], *, one_way: bool) -> list[tuple[str, str]]:
        """Cut every link from ``side`` to the rest (and back unless ``one_way``)."""
        inside = set(side)
        links = []
        for a in self._params.node_ids:
            for b in self._params.node_ids:
                if a in inside and b not in inside:
                    links.append((a, b))
                    if not one_way:
                        links.append((b, a))
        self.block(links)
        return sorted(links)

    def heal(self) -> None:
        self._blocked.clear()

    def is_blocked(self, sender: str, receiver: str) -> bool:
        return (sender, receiver) in self._blocked

    # --- traffic -----------------------------------------------------------

    def send(self, sender: str, receiver: str, payload: object) -> bool:
        """Queue ``payload``; False when the link is cut (the sender's
        transport would see its connection down), True even if it is lost."""
        self.stats.sent += 1
        if self.is_blocked(sender, receiver):
            self.stats.cut += 1
            return False
        if self.faults_enabled and self._rng.random() < self._params.drop_rate:
            self.stats.dropped += 1
            return True
        self._schedule(sender, receiver, payload)
        if self.faults_enabled and self._rng.random() < self._params.duplicate_rate:
            self.stats.duplicated += 1
            self._schedule(sender, receiver, payload)
        return True

    def _schedule(self, sender: str, receiver: str, payload: object) -> None:
        delay_ms = self._params.latency_ms_by_link[(sender, receiver)]
        if self.faults_enabled:
            delay_ms += self._rng.randint(0, self._params.jitter_ms_max)
            if self._rng.random() < self._params.reorder_rate:
                delay_ms += self._rng.randint(1, self._params.reorder_delay_ms_max)

        def arrive() -> None:
            if self.is_blocked(sender, receiver):
                self.stats.cut += 1
                return
            self.stats.delivered += 1
            self._deliver(sender, receiver, payload)

        # The size makes the trace digest see what was sent, not only when.
        size = len(payload) if isinstance(payload, bytes | tuple) else 0
        self._queue.schedule(delay_ms, f"net {sender}->{receiver} {size}", arrive)
