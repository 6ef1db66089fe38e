"""A restart reads applied state from LevelDB; it does not replay the log."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from node_harness import FAST_DRIVER, wait_ready

from fastpaca.app import NODE_KEY, create_app
from fastpaca.config import Settings
from fastpaca.store.effects import Effect


async def test_restart_applies_nothing_already_applied(make_node: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    first = await make_node(data_dir=data_dir)
    await first.put("/v1/conversations/c1")
    batch = [{"role": "user", "parts": [{"type": "text", "text": str(n)}]} for n in range(500)]
    for _ in range(4):
        response = await first.post("/v1/conversations/c1/messages", json={"messages": batch})
        assert response.status == 201
    await first.close()

    settings = Settings(FASTPACA_RAFT_DATA_DIR=str(data_dir), FASTPACA_RAFT_GROUPS=4)
    app = create_app(settings, driver_config=FAST_DRIVER)
    applied: list[Effect] = []

    def listen(group_id: int, effects: Sequence[Effect]) -> None:
        applied.extend(effects)

    app[NODE_KEY].effects.add_listener(listen)  # before the driver starts
    async with TestClient(TestServer(app, host="127.0.0.1")) as second:
        await wait_ready(second)
        record = await (await second.get("/v1/conversations/c1")).json()
        assert record["last_seq"] == 2000 and record["version"] == 4
        assert applied == []  # nothing was applied again on start
        response = await second.post("/v1/conversations/c1/messages", json={"message": batch[0]})
        assert (await response.json())["seq"] == 2001
        assert [getattr(e, "seq", None) for e in applied] == [2001]
