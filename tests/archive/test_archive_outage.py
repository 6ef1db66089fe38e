"""Postgres down: appends never wait for it, the lag series grow, reads that
need trimmed messages answer 503, and the archive catches up once it is back
(including a node that started while it was down)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from archive_harness import ArchiveNode, archive_env, metric_value, pg_rows, poll, text_message

from fastpaca.observability.metrics import ARCHIVE_LAG_SERIES_MAX
from tests.support.postgres import PostgresServer


async def _pending_rows(node: ArchiveNode, expected: float) -> bool:
    return metric_value(await node.metrics(), "fastpaca_archive_pending_rows") == expected


async def test_postgres_down_never_blocks_appends_and_the_archive_catches_up(
    make_node: Callable[..., Any], pg_private: PostgresServer
) -> None:
    url = pg_private.url()
    node = await make_node(**archive_env(url))  # Postgres is not running yet
    await node.create("c")
    await node.append("c", *(text_message(f"m{i}") for i in range(1, 6)))
    await poll(lambda: _pending_rows(node, 5))
    assert 'fastpaca_archive_lag{conversation_id="c"} 5.0' in await node.metrics()
    assert (await node.conversation("c"))["archived_seq"] == 0

    pg_private.start()  # the schema is created by a later flush, then the copy runs
    await poll(lambda: _pending_rows(node, 0))
    assert (await node.conversation("c"))["archived_seq"] == 5
    assert node.stored_seqs("c") == [3, 4, 5]

    pg_private.stop()
    await node.append("c", *(text_message(f"m{i}") for i in range(6, 10)))
    await poll(lambda: _pending_rows(node, 4))
    assert 'fastpaca_archive_lag{conversation_id="c"} 4.0' in await node.metrics()
    # What LevelDB still holds is served; what only the archive holds is not.
    recent = await node.client.get("/v1/conversations/c/tail?limit=7")
    assert recent.status == 200
    assert [m["seq"] for m in (await recent.json())["messages"]] == [3, 4, 5, 6, 7, 8, 9]
    old = await node.client.get("/v1/conversations/c/messages?from=1")
    assert old.status == 503 and "Retry-After" in old.headers
    assert (await old.json())["error"] == "unavailable"

    pg_private.start()
    await poll(lambda: _pending_rows(node, 0))
    assert [row["seq"] for row in await pg_rows(url, "c")] == list(range(1, 10))
    assert node.stored_seqs("c") == [7, 8, 9]
    whole = await node.client.get("/v1/conversations/c/messages?from=1")
    assert [m["seq"] for m in (await whole.json())["messages"]] == list(range(1, 10))


async def test_lag_series_are_bounded_to_the_most_lagging_conversations(
    make_node: Callable[..., Any], pg_private: PostgresServer
) -> None:
    node = await make_node(**archive_env(pg_private.url()))  # Postgres stays down
    count = ARCHIVE_LAG_SERIES_MAX + 5
    for index in range(count):
        await node.create(f"c{index}")
        # c0 lags by 1 message, c1 by 2, ...: the series must be the largest ones.
        await node.append(f"c{index}", *(text_message("x") for _ in range(index + 1)))
    await poll(lambda: _pending_rows(node, count * (count + 1) // 2))
    metrics = await node.metrics()
    lag_lines = [line for line in metrics.splitlines() if line.startswith("fastpaca_archive_lag{")]
    assert len(lag_lines) == ARCHIVE_LAG_SERIES_MAX
    assert {line.split('"')[1] for line in lag_lines} == {f"c{i}" for i in range(5, count)}
    assert metric_value(metrics, "fastpaca_archive_pending_conversations") == count
