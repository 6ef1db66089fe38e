"""A real ``fastpaca serve`` killed with -9 while it archives and appends:
after the restart every acknowledged message is in Postgres exactly once,
and the API still returns the whole history through the trimmed boundary."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import aiohttp
import orjson
from archive_harness import archive_caught_up, metric_value, pg_rows, poll

from tests.support.cluster_procs import ClusterNodeProcess, history, message, wait_ready
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer

CONVERSATIONS = [f"kill-{index}" for index in range(4)]


async def _append_until_stopped(
    session: aiohttp.ClientSession, url: str, stop: asyncio.Event, acked: dict[str, int]
) -> None:
    """Append batches of 1-3 round robin, remembering the highest acknowledged seq."""
    for count in itertools.count():
        if stop.is_set():
            return
        cid = CONVERSATIONS[count % len(CONVERSATIONS)]
        body = {"messages": [message(f"{cid}-{count}-{i}") for i in range(1 + count % 3)]}
        try:
            async with session.post(f"{url}/v1/conversations/{cid}/messages", json=body) as reply:
                if reply.status == 201:
                    seqs = [item["seq"] for item in (await reply.json())["messages"]]
                    acked[cid] = max(acked.get(cid, 0), *seqs)
        except aiohttp.ClientError:
            return  # the node was killed under this request


async def test_kill_9_mid_archive_loses_nothing_from_the_archive(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    url = pg_server.create_database("archive_kill")
    node = ClusterNodeProcess("solo", free_port(), tmp_path / "data", tmp_path, "127.0.0.1")
    env = {
        "FASTPACA_RAFT_GROUPS": "4",
        "FASTPACA_ARCHIVER_ENABLED": "true",
        "DATABASE_URL": url,
        "FASTPACA_ARCHIVE_FLUSH_INTERVAL_MS": "10",
        "FASTPACA_ARCHIVE_BATCH_SIZE": "7",
        "FASTPACA_TAIL_KEEP": "5",
    }
    node.start(env)
    try:
        await wait_ready(node)
        acked: dict[str, int] = {}
        async with aiohttp.ClientSession() as session:
            for cid in CONVERSATIONS:
                async with session.put(f"{node.url}/v1/conversations/{cid}", json={}) as reply:
                    assert reply.status == 201
            stop = asyncio.Event()
            appender = asyncio.create_task(_append_until_stopped(session, node.url, stop, acked))

            async def archiving_with_backlog() -> bool:
                text = await (await session.get(node.url + "/metrics")).text()
                return (
                    metric_value(text, "fastpaca_archive_inserted_total") > 100
                    and metric_value(text, "fastpaca_archive_trimmed_total") > 0
                )

            await poll(archiving_with_backlog, timeout_s=30)
            node.kill()  # SIGKILL, with appends and archive flushes in flight
            stop.set()
            await appender

            node.start(env)
            await wait_ready(node)

            await poll(lambda: archive_caught_up(session, node.url, CONVERSATIONS), timeout_s=30)
            for cid in CONVERSATIONS:
                reply = await session.get(f"{node.url}/v1/conversations/{cid}")
                last_seq = (await reply.json())["last_seq"]
                assert last_seq >= acked.get(cid, 0) > 5, "every acknowledged append survived"
                rows = await pg_rows(url, cid)
                assert [row["seq"] for row in rows] == list(range(1, last_seq + 1))
                whole = await history(session, node.url, cid)
                assert [m["seq"] for m in whole] == list(range(1, last_seq + 1))
                for row, shown in zip(rows, whole, strict=True):
                    assert orjson.loads(row["parts"]) == shown["parts"]
        node.terminate()  # SIGTERM with the archiver running: a clean exit
        assert node.wait_exit(10) == 0
        assert "Traceback" not in node.log_text()
    finally:
        node.kill()
