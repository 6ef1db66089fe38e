"""The official Phoenix JS client (npm ``phoenix`` 1.8.16 over ``ws``) against
a real ``fastpaca serve`` process: join with ``from_seq``, replay then live
with no gap and no duplicate, heartbeats answered, and SIGTERM closing the
socket with 1001 while the node still exits 0 promptly.

``make test`` installs the pinned packages (``npm ci`` in tests/stream/js).
Without node or those packages this test fails, never skips."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.process.node_process import NodeProcess

JS_DIR = Path(__file__).resolve().parent / "js"
SCRIPT = JS_DIR / "stream_client.js"


@pytest.fixture
def node_binary() -> str:
    node = shutil.which("node")
    assert node is not None, "node is not installed: `make test` installs Debian's nodejs and npm"
    assert (JS_DIR / "node_modules" / "phoenix" / "package.json").exists(), (
        f"the Phoenix JS client is not installed: run `npm ci` in {JS_DIR} (make test does)"
    )
    return node


@pytest.fixture
async def fastpaca(tmp_path: Path) -> Any:
    node = NodeProcess(tmp_path / "data", tmp_path)
    node.start()
    try:
        await node.wait_ready()
        yield node
    finally:
        node.kill()


async def _append(session: aiohttp.ClientSession, url: str, texts: list[str]) -> None:
    body = {"messages": [{"role": "user", "parts": [{"type": "text", "text": t}]} for t in texts]}
    async with session.post(url, json=body) as response:
        assert response.status == 201, await response.text()


class Lines:
    """The JSON lines the JS client prints, read with deadlines."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen: list[dict[str, Any]] = []

    async def until(self, event: str, timeout_s: float = 10.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.process.stdout.readline()
                assert raw, f"the JS client exited early; it printed {self.seen}"
                line = json.loads(raw)
                self.seen.append(line)
                if line["event"] == event:
                    return line

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.seen if line["event"] == name]


async def test_official_js_client_replays_then_streams_live(
    node_binary: str, fastpaca: NodeProcess
) -> None:
    conversation = fastpaca.url + "/v1/conversations/js-1"
    async with aiohttp.ClientSession() as session:
        async with session.put(conversation, json={}) as response:
            assert response.status == 201
        await _append(session, conversation + "/messages", [f"old {i}" for i in range(1, 6)])

        client = await asyncio.create_subprocess_exec(
            node_binary, str(SCRIPT), f"ws://127.0.0.1:{fastpaca.port}/socket", "js-1", "3", "12",
            stdout=asyncio.subprocess.PIPE, cwd=JS_DIR,
        )  # fmt: skip
        lines = Lines(client)
        try:
            joined = await lines.until("joined")
            assert joined["response"] == {"last_seq": 5, "version": 1, "tombstoned": False}
            # Live appends while (and after) the replay of 3..5 goes out.
            await _append(session, conversation + "/messages", ["new 6", "new 7"])
            for i in range(8, 13):
                await _append(session, conversation + "/messages", [f"new {i}"])
            await lines.until("done")
        except BaseException:
            client.kill()
            raise

        messages = lines.events("message")
        assert [m["seq"] for m in messages] == list(range(3, 13)), lines.seen
        assert [m["text"] for m in messages[:3]] == ["old 3", "old 4", "old 5"]
        assert [m["text"] for m in messages[3:]] == [f"new {i}" for i in range(6, 13)]
        assert all(m["ref"] is None for m in messages)
        # Replayed pushes have no version (the store keeps none per message);
        # live ones carry the append's version: one batch (2), then one each.
        assert [m["version"] for m in messages] == [None] * 3 + [2, 2, 3, 4, 5, 6, 7]
        assert not lines.events("gap") and not lines.events("channel_error")
        assert not lines.events("join_error") and not lines.events("socket_error")
        assert lines.events("ping")[0]["latency_ms"] < 1000

        stopped_at = time.monotonic()
        fastpaca.signal(signal.SIGTERM)
        try:
            close = await lines.until("close", timeout_s=5.0)
        finally:
            client.kill()  # it would reconnect forever, as the Phoenix client does
            await client.wait()
        assert close["code"] == 1001, close
        assert await fastpaca.wait_exit(timeout_s=10.0) == 0
        exit_s = time.monotonic() - stopped_at
        assert exit_s < 4.0, f"SIGTERM with an open stream socket took {exit_s:.2f} s"
        assert len(lines.events("open")) == 1  # never had to reconnect
