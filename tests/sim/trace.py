"""A run's trace: a running hash of everything that happened, plus short tails.

Owns the replay fingerprint. Two runs of the same seed must produce the same
digest; the tails (the last notable events — faults, elections, membership,
proposals — and the last few raw ones) go into failure reports. Lines must be
built from deterministic values only (no ids, addresses or set order).
"""

from __future__ import annotations

import hashlib
from collections import deque

__all__ = ["Trace"]

_ROUTINE = ("tick ", "iter ", "net ", "client ")
"""Event labels too frequent to be worth reading in a report."""


class Trace:
    def __init__(self, tail_lines: int = 60) -> None:
        self._hash = hashlib.sha256()
        self._notable: deque[str] = deque(maxlen=tail_lines)
        self._recent: deque[str] = deque(maxlen=8)
        self.lines = 0

    def record(self, time_ms: int, line: str) -> None:
        text = f"{time_ms:>8} {line}"
        self._hash.update(text.encode())
        self._hash.update(b"\n")
        self.lines += 1
        if line.startswith(_ROUTINE):
            self._recent.append(text)
        else:
            self._notable.append(text)

    def digest(self) -> str:
        return self._hash.hexdigest()

    def tail(self) -> str:
        return "\n".join([*self._notable, "--- last routine events ---", *self._recent])

    def notable(self) -> list[str]:
        return list(self._notable)
