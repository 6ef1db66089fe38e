"""A run's trace: a running hash of everything that happened, plus a short tail.

Owns the replay fingerprint. Two runs of the same seed must produce the same
digest; the tail (last lines) goes into failure reports. Lines must be built
from deterministic values only (no ids, addresses or set order).
"""

from __future__ import annotations

import hashlib
from collections import deque

__all__ = ["Trace"]


class Trace:
    def __init__(self, tail_lines: int = 40) -> None:
        self._hash = hashlib.sha256()
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self.lines = 0

    def record(self, time_ms: int, line: str) -> None:
        text = f"{time_ms:>8} {line}"
        self._hash.update(text.encode())
        self._hash.update(b"\n")
        self._tail.append(text)
        self.lines += 1

    def digest(self) -> str:
        return self._hash.hexdigest()

    def tail(self) -> str:
        return "\n".join(self._tail)
