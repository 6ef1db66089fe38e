"""A real node in-process: the app over the real Raft driver and LevelDB in a
temp dir, served by aiohttp's test server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from node_harness import FAST_DRIVER, FakeClock, wait_ready

from fastpaca.app import create_app
from fastpaca.config import Settings


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
