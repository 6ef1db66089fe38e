"""Helpers of the archive tests: an in-process node over the real Raft driver
and LevelDB, HTTP helpers, and a Postgres reader for assertions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from fastpaca.app import ARCHIVER_KEY, NODE_KEY, create_app
from fastpaca.archive.archiver import Archiver
from fastpaca.config import Settings
from fastpaca.raft.driver import DriverConfig
from fastpaca.store import keys

FAST_DRIVER = DriverConfig(tick_interval_ms=10, election_timeout_ticks=10)
GROUPS = 4


class FakeClock:
    """Proposer wall clock, moved by the tests so inserted_at differs per message."""

    def __init__(self, now_ms: int = 1_770_033_600_000) -> None:  # 2026-02-02T12:00:00Z
        self.now_ms = now_ms

    def __call__(self) -> int:
        self.now_ms += 1_000
        return self.now_ms


@dataclass
class ArchiveNode:
    client: TestClient

    @property
    def archiver(self) -> Archiver:
        return self.client.server.app[ARCHIVER_KEY]

    def stored_seqs(self, conversation_id: str) -> list[int]:
        """Seqs of the conversation's messages still in this node's LevelDB."""
        node = self.client.server.app[NODE_KEY]
        group_id = node.runtime.group_of(conversation_id)
        start, stop = keys.message_range(group_id, conversation_id, 0, keys.SEQ_MAX + 1)
        return [keys.seq_of_message_key(key) for key, _ in node.kv.iterate(start, stop)]

    async def close(self) -> None:
        await self.client.close()

    async def create(self, conversation_id: str) -> None:
        response = await self.client.put(f"/v1/conversations/{conversation_id}", json={})
        assert response.status in (200, 201), await response.text()

    async def append(self, conversation_id: str, *messages: dict[str, Any]) -> list[int]:
        response = await self.client.post(
            f"/v1/conversations/{conversation_id}/messages", json={"messages": list(messages)}
        )
        assert response.status == 201, await response.text()
        return [item["seq"] for item in (await response.json())["messages"]]

    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/conversations/{conversation_id}")
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body

    async def raw(self, path: str) -> bytes:
        response = await self.client.get(path)
        assert response.status == 200, await response.text()
        return await response.read()

    async def metrics(self) -> str:
        return (await self.raw("/metrics")).decode()


async def start_node(*, clock: FakeClock | None = None, **env: Any) -> ArchiveNode:
    values = {"FASTPACA_RAFT_GROUPS": GROUPS, **env}
    app = create_app(Settings(**values), clock_ms=clock or FakeClock(), driver_config=FAST_DRIVER)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    async with asyncio.timeout(10):
        while (await client.get("/health/ready")).status != 200:
            await asyncio.sleep(0.02)
    return ArchiveNode(client)


def archive_env(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "FASTPACA_ARCHIVER_ENABLED": True,
        "DATABASE_URL": url,
        "FASTPACA_ARCHIVE_FLUSH_INTERVAL_MS": 20,
        "FASTPACA_ARCHIVE_BATCH_SIZE": 4,
        "FASTPACA_TAIL_KEEP": 3,
        **overrides,
    }


def text_message(text: str, **extra: Any) -> dict[str, Any]:
    return {"role": "user", "parts": [{"type": "text", "text": text}], **extra}


async def poll(check: Callable[[], Awaitable[bool]], *, timeout_s: float = 10.0) -> None:
    """Wait until ``check()`` is true, polling; fail after the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met in {timeout_s} s")
        await asyncio.sleep(0.02)


async def archive_caught_up(
    session: aiohttp.ClientSession, base_url: str, conversation_ids: Iterable[str]
) -> bool:
    """Whether every conversation reads back (200) with ``archived_seq == last_seq``
    through the node at ``base_url``; a poll predicate for ``poll``."""
    for conversation_id in conversation_ids:
        reply = await session.get(f"{base_url}/v1/conversations/{conversation_id}")
        if reply.status != 200:
            return False
        record = await reply.json()
        if record["archived_seq"] != record["last_seq"]:
            return False
    return True


async def pg_rows(url: str, conversation_id: str | None = None) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        if conversation_id is None:
            return list(
                await connection.fetch(
                    "SELECT conversation_id, seq FROM messages ORDER BY conversation_id, seq"
                )
            )
        return list(
            await connection.fetch(
                "SELECT conversation_id, seq, role, parts::text AS parts, "
                "metadata::text AS metadata, token_count, inserted_at "
                "FROM messages WHERE conversation_id = $1 ORDER BY seq",
                conversation_id,
            )
        )
    finally:
        await connection.close()


def metric_value(text: str, name: str) -> float:
    """Sum of every sample of ``name`` (any labels) in a /metrics body."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total
