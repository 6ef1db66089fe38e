"""The archive end to end in one process: a real node (Raft driver, LevelDB)
with the archive on, against a throwaway PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from archive_harness import (
    ArchiveNode,
    archive_env,
    metric_value,
    pg_rows,
    poll,
    text_message,
)


async def _archived(node: ArchiveNode, conversation_id: str) -> bool:
    record = await node.conversation(conversation_id)
    return bool(record["archived_seq"] == record["last_seq"] > 0)


async def test_appended_messages_reach_postgres_as_the_api_shows_them(
    make_node: Callable[..., Any], pg_url: str
) -> None:
    node = await make_node(**archive_env(pg_url, FASTPACA_TAIL_KEEP=1000))
    await node.create("c1")
    await node.append(
        "c1",
        text_message("héllo ☃ \"quoted\"", metadata={"k": [1, 2.5, None, True], "z": {"b": 1, "a": 2}},
                     token_count=7),
        {"role": "assistant", "metadata": {},
         "parts": [{"type": "tool_call", "name": "lookup", "payload": {"sku": "A-19", "n": 0.1}}]},
    )  # fmt: skip
    await node.append("c1", text_message("third"))
    await poll(lambda: _archived(node, "c1"))

    api = orjson.loads(await node.raw("/v1/conversations/c1/messages?from=1"))["messages"]
    rows = await pg_rows(pg_url, "c1")
    assert [row["seq"] for row in rows] == [1, 2, 3]
    for row, message in zip(rows, api, strict=True):
        assert row["conversation_id"] == "c1"
        assert row["role"] == message["role"]
        assert orjson.loads(row["parts"]) == message["parts"]
        assert orjson.loads(row["metadata"]) == message["metadata"]
        assert row["token_count"] == message["token_count"]
        assert row["inserted_at"] == datetime.fromisoformat(message["inserted_at"])
    metrics = await node.metrics()
    assert metric_value(metrics, "fastpaca_archive_inserted_total") == 3
    assert metric_value(metrics, "fastpaca_archive_attempted_total") == 3
    assert metric_value(metrics, "fastpaca_archive_bytes_inserted_total") > 0
    assert metric_value(metrics, "fastpaca_archive_pending_rows") == 0
    assert metric_value(metrics, "fastpaca_archive_flush_duration_ms_count") >= 1
    assert metric_value(metrics, "fastpaca_archive_trimmed_total") == 0  # TAIL_KEEP 1000


def _page_paths(conversation_id: str, last_seq: int) -> list[str]:
    base = f"/v1/conversations/{conversation_id}"
    paths = [
        f"{base}/tail?limit={limit}&offset={offset}"
        for offset in range(last_seq + 2)
        for limit in (1, 2, 3, 5, last_seq)
    ]
    paths += [
        f"{base}/messages?from={from_seq}&limit={limit}"
        for from_seq in range(last_seq + 2)
        for limit in (1, 3, 4, last_seq + 1)
    ]
    return paths


async def _capture(node: ArchiveNode, paths: list[str]) -> dict[str, bytes]:
    return {path: await node.raw(path) for path in paths}


async def test_trimming_keeps_tail_keep_newest_and_reads_return_the_same_bytes(
    make_node: Callable[..., Any], pg_url: str, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    # First without the archive: every page as LevelDB alone answers it.
    plain = await make_node(FASTPACA_RAFT_DATA_DIR=data_dir)
    await plain.create("a")
    await plain.create("b")
    for batch in (["m1"], ["m2", "m3", "m4"], ["m5"], ["m6", "m7"], ["m8", "m9", "m10", "m11"]):
        await plain.append("a", *(text_message(text, metadata={"i": text}) for text in batch))
    await plain.append("b", *(_rich_message(i) for i in range(5)))
    paths = _page_paths("a", 11) + _page_paths("b", 5)
    before = await _capture(plain, paths)
    await plain.close()

    # Then with it (TAIL_KEEP=3, batches of 4): the start-up scan finds both
    # conversations pending, archives them and trims all but the 3 newest.
    node = await make_node(**archive_env(pg_url, FASTPACA_RAFT_DATA_DIR=data_dir))
    await poll(lambda: _archived(node, "a"))
    await poll(lambda: _archived(node, "b"))
    await poll(lambda: _trimmed_to(node, {"a": [9, 10, 11], "b": [3, 4, 5]}))
    assert [row["seq"] for row in await pg_rows(pg_url, "a")] == list(range(1, 12))
    assert metric_value(await node.metrics(), "fastpaca_archive_trimmed_total") == 8 + 2

    after = await _capture(node, paths)
    changed = [path for path in paths if after[path] != before[path]]
    assert not changed, (changed[:5], [(before[p], after[p]) for p in changed[:2]])

    # New appends after the trim: history stays whole, the tail moves on.
    await node.append("a", text_message("m12"), text_message("m13"))
    await poll(lambda: _archived(node, "a"))
    await poll(lambda: _trimmed_to(node, {"a": [11, 12, 13]}))
    full = orjson.loads(await node.raw("/v1/conversations/a/messages?from=0&limit=1000"))
    assert [m["seq"] for m in full["messages"]] == list(range(1, 14))
    old_part = orjson.loads(before["/v1/conversations/a/messages?from=0&limit=12"])["messages"]
    assert full["messages"][:11] == old_part


def _rich_message(index: int) -> dict[str, Any]:
    """JSON a Postgres ``jsonb`` round trip could alter: key order, nesting,
    escapes, non-ASCII, floats, big integers, nulls, empty containers."""
    return {
        "role": ["user", "assistant", "tool"][index % 3],
        "parts": [
            {"type": "text", "text": f"b{index} é ☃ 🙂 \"q\" \\ \n\t </>"},
            {"type": "tool_call", "name": "lookup",
             "payload": {"z": 1, "a": [0.1, -2.5, 1e-7, 3.0, 1e300, 2**63, None, True, False],
                         "m": {"": "", "nested": {"k": []}, "e": {}}}},
        ],
        "metadata": {"zeta": index, "alpha": {"b": "x", "a": "y"}, "unicode_key_é": "v"},
        **({"token_count": index * 1000} if index % 2 else {}),
    }  # fmt: skip


async def _trimmed_to(node: ArchiveNode, expected: dict[str, list[int]]) -> bool:
    return all(node.stored_seqs(cid) == seqs for cid, seqs in expected.items())


async def test_a_row_postgres_refuses_stops_only_its_conversation_at_that_row(
    make_node: Callable[..., Any], pg_url: str
) -> None:
    node = await make_node(**archive_env(pg_url, FASTPACA_TAIL_KEEP=1000))
    for cid in ("ok", "big", "nul"):
        await node.create(cid)
    await node.append("ok", *(text_message(f"ok{i}") for i in range(3)))
    # Valid for the API, refused by the schema: token_count above int32, and
    # U+0000, which jsonb cannot hold.
    await node.append("big", text_message("1"), text_message("2", token_count=2**31))
    await node.append("nul", text_message("1"), text_message("2"), text_message("x\u0000y"))
    await poll(lambda: _archived(node, "ok"))

    async def stuck_at_their_bad_row() -> bool:
        big, nul = await node.conversation("big"), await node.conversation("nul")
        return bool(big["archived_seq"] == 1 and nul["archived_seq"] == 2)

    await poll(stuck_at_their_bad_row)
    assert [row["seq"] for row in await pg_rows(pg_url, "big")] == [1]
    assert [row["seq"] for row in await pg_rows(pg_url, "nul")] == [1, 2]
    metrics = await node.metrics()
    assert 'fastpaca_archive_lag{conversation_id="big"} 1.0' in metrics
    assert 'fastpaca_archive_lag{conversation_id="nul"} 1.0' in metrics
    assert metric_value(metrics, "fastpaca_archive_pending_conversations") == 2
    # Appends never wait for the archive.
    await node.append("big", text_message("3"))
