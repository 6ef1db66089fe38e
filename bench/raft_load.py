"""The load loop shared by the Raft bench's in-process and loopback runs.

Keeps ``inflight`` proposals of ``payload_bytes`` outstanding (or paces them at
``rate_per_s``), spread round-robin over the groups it is given, and records
each proposal's commit latency: from ``propose`` to the future resolving with
the applied result on the leader.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fastpaca.raft.driver import RaftDriver
from fastpaca.raft.testing import put_command


@dataclass(slots=True)
class LoadResult:
    ops: int
    failures: int
    elapsed_s: float
    latencies_ms: list[float]
    failure_kinds: dict[str, int] = field(default_factory=dict)
    """Why proposals failed: the exception's name, or "no leader" when the
    group had none here when its turn came."""

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies_ms)
        return {
            "ops": self.ops,
            "failures": self.failures,
            "elapsed_s": self.elapsed_s,
            "ops_per_s": self.ops / self.elapsed_s if self.elapsed_s else 0.0,
            "p50_ms": lat[len(lat) // 2] if lat else float("nan"),
            "p99_ms": lat[int(len(lat) * 0.99)] if lat else float("nan"),
        }


async def run_load(
    leader_for: Callable[[int], RaftDriver | None],
    groups: Sequence[int],
    *,
    ops: int,
    inflight: int,
    payload_bytes: int = 300,
    rate_per_s: float = 0.0,
) -> LoadResult:
    payload = os.urandom(payload_bytes)
    latencies_ms: list[float] = []
    failures = 0
    failure_kinds: dict[str, int] = {}
    next_op = 0
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal next_op, failures
        while next_op < ops:
            op = next_op
            next_op += 1
            if rate_per_s > 0:
                due = started + op / rate_per_s
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            group = groups[op % len(groups)]
            driver = leader_for(group)
            if driver is None:
                failures += 1
                failure_kinds["no leader"] = failure_kinds.get("no leader", 0) + 1
                await asyncio.sleep(0.01)
                continue
            t0 = time.perf_counter()
            try:
                await driver.propose(
                    group, put_command(b"k%d" % (op % 1024), payload), timeout_s=10
                )
            except Exception as exc:
                failures += 1
                kind = type(exc).__name__
                failure_kinds[kind] = failure_kinds.get(kind, 0) + 1
                continue
            latencies_ms.append((time.perf_counter() - t0) * 1000.0)

    await asyncio.gather(*(worker() for _ in range(max(1, min(inflight, ops)))))
    elapsed_s = time.perf_counter() - started
    return LoadResult(len(latencies_ms), failures, elapsed_s, latencies_ms, failure_kinds)
