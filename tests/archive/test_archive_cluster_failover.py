"""Three real ``fastpaca serve`` processes with the archive on: the node that
is archiving is killed with -9 mid-archive; the new leaders finish the copy
from replicated state, with no message missing and none twice, and every node
still serves the whole history through the trimmed boundary."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import aiohttp
from archive_harness import archive_caught_up, metric_value, pg_rows, poll

from tests.support.cluster_procs import LocalCluster, history, message
from tests.support.postgres import PostgresServer

CONVERSATIONS = [f"fo-{index}" for index in range(6)]


async def _append_through(
    session: aiohttp.ClientSession, urls: list[str], stop: asyncio.Event
) -> None:
    for count in itertools.count():
        if stop.is_set():
            return
        cid = CONVERSATIONS[count % len(CONVERSATIONS)]
        url = urls[count % len(urls)]
        body = {"message": message(f"{cid}-{count}"), "idempotency_key": f"k{count}"}
        try:
            async with session.post(f"{url}/v1/conversations/{cid}/messages", json=body) as reply:
                await reply.read()
        except aiohttp.ClientError:
            pass  # its node was killed: the next append goes elsewhere


async def test_killing_the_archiving_node_loses_nothing_from_the_archive(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    url = pg_server.create_database("archive_failover")
    env = {
        "FASTPACA_ARCHIVER_ENABLED": "true",
        "DATABASE_URL": url,
        "FASTPACA_ARCHIVE_FLUSH_INTERVAL_MS": "20",
        "FASTPACA_ARCHIVE_BATCH_SIZE": "5",
        "FASTPACA_TAIL_KEEP": "4",
    }
    cluster = LocalCluster(tmp_path, 3, groups=4, env=env)
    try:
        cluster.start_all()
        await cluster.wait_ready()
        async with aiohttp.ClientSession() as session:
            first = cluster.nodes[0].url
            for cid in CONVERSATIONS:
                async with session.put(f"{first}/v1/conversations/{cid}", json={}) as reply:
                    assert reply.status == 201, await reply.text()
            stop = asyncio.Event()
            appender = asyncio.create_task(
                _append_through(session, [n.url for n in cluster.nodes], stop)
            )

            inserted: dict[str, float] = {}

            async def archiving() -> bool:
                for node in cluster.nodes:
                    text = await (await session.get(node.url + "/metrics")).text()
                    inserted[node.name] = metric_value(text, "fastpaca_archive_inserted_total")
                return sum(inserted.values()) > 60

            await poll(archiving, timeout_s=30)
            victim = max(cluster.nodes, key=lambda node: inserted[node.name])
            victim.kill()
            survivors = [node for node in cluster.nodes if node is not victim]
            await asyncio.sleep(1.0)  # appends keep flowing through the survivors meanwhile
            stop.set()
            await appender

            await poll(
                lambda: archive_caught_up(session, survivors[0].url, CONVERSATIONS), timeout_s=30
            )
            for cid in CONVERSATIONS:
                reply = await session.get(f"{survivors[0].url}/v1/conversations/{cid}")
                last_seq = (await reply.json())["last_seq"]
                assert last_seq > 4
                rows = await pg_rows(url, cid)
                assert [row["seq"] for row in rows] == list(range(1, last_seq + 1))
                for node in survivors:
                    whole = await history(session, node.url, cid)
                    assert [m["seq"] for m in whole] == list(range(1, last_seq + 1))
    finally:
        cluster.stop_all()
