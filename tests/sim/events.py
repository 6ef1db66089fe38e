"""The simulator's event queue: a heap of callbacks ordered by ``(time_ms, seq)``.

Owns only ordering. ``seq`` is a counter assigned at scheduling time, so two
events due at the same instant always run in the order they were scheduled:
no dict, set or id() ever decides what happens first. It must not draw random
numbers or know what an event does.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

__all__ = ["EventQueue"]


class EventQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str, Callable[[], None]]] = []
        self._seq = 0
        self.now_ms = 0

    def schedule(self, delay_ms: int, label: str, action: Callable[[], None]) -> None:
        """Run ``action`` ``delay_ms`` from now (0 means later in this instant)."""
        assert delay_ms >= 0, delay_ms
        self._seq += 1
        heapq.heappush(self._heap, (self.now_ms + delay_ms, self._seq, label, action))

    def pop_until(self, deadline_ms: int) -> tuple[str, Callable[[], None]] | None:
        """Advance the clock to the next event due at or before ``deadline_ms``
        and hand it back, or return None (clock set to the deadline)."""
        if not self._heap or self._heap[0][0] > deadline_ms:
            self.now_ms = max(self.now_ms, deadline_ms)
            return None
        time_ms, _, label, action = heapq.heappop(self._heap)
        self.now_ms = time_ms
        return label, action

    def __len__(self) -> int:
        return len(self._heap)
