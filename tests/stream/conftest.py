"""A real node in-process (Raft driver, LevelDB in a temp dir, aiohttp's test
server on 127.0.0.1) and a Phoenix client speaking raw frames to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from phoenix_client import PhoenixClient

from fastpaca.app import create_app
from fastpaca.config import Settings
from tests.web.node_harness import FAST_DRIVER, FakeClock, wait_ready


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = Settings(FASTPACA_RAFT_DATA_DIR=str(tmp_path / "data"), FASTPACA_RAFT_GROUPS=4)
    app = create_app(settings, clock_ms=FakeClock(), driver_config=FAST_DRIVER)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    await wait_ready(client)
    yield client
    await client.close()


@pytest.fixture
async def connect(node: TestClient) -> AsyncIterator[Callable[..., Any]]:
    """Opens Phoenix sockets on the node: ``await connect(vsn="2.0.0")``."""
    opened: list[PhoenixClient] = []

    async def open_socket(vsn: str | None = "2.0.0", **kwargs: Any) -> PhoenixClient:
        query = "" if vsn is None else f"?vsn={vsn}"
        ws = await node.ws_connect("/socket/websocket" + query, **kwargs)
        client = PhoenixClient(ws, v1=vsn is None or vsn.startswith("1."))
        opened.append(client)
        return client

    yield open_socket
    for client in opened:
        await client.ws.close()
