"""Shared helpers of the HTTP contract tests."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from fastpaca.raft.driver import DriverConfig

# Fast ticks so the single-voter groups elect in ~0.1 s; same code paths.
FAST_DRIVER = DriverConfig(tick_interval_ms=10, election_timeout_ticks=10)


class FakeClock:
    """Proposer wall clock, settable so timestamps are checkable."""

    def __init__(self, now_ms: int = 1_770_033_600_000) -> None:  # 2026-02-02T12:00:00Z
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


async def wait_ready(client: TestClient, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            response = await client.get("/health/ready")
            if response.status == 200:
                return
            await asyncio.sleep(0.02)
