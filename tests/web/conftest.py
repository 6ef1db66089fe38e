"""A real node in-process: the app over the real Raft driver and LevelDB in a
temp dir, served by aiohttp's test server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fastpaca.app import create_app
from fastpaca.config import Settings
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


NodeFactory = Callable[..., "asyncio.Future[TestClient]"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_node(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient] = []

    async def start(*, data_dir: Path | None = None, **env: Any) -> TestClient:
        values = {
            "FASTPACA_RAFT_DATA_DIR": str(data_dir or tmp_path / "data"),
            "FASTPACA_RAFT_GROUPS": 4,
            **env,
        }
        app = create_app(Settings(**values), clock_ms=clock, driver_config=FAST_DRIVER)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        await wait_ready(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_node: Callable[..., Any]) -> TestClient:
    node: TestClient = await make_node()
    return node
