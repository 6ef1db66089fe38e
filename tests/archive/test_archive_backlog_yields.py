"""A flush over a large backlog of dirty conversations reads their states
from LevelDB in bounded stretches, yielding to the event loop in between,
so requests on the same loop are not stalled for the whole pass."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from fastpaca.archive.archiver import COLLECT_YIELD_EVERY, Archiver
from fastpaca.archive.postgres import ArchiveUnavailable, PostgresArchive
from fastpaca.observability.metrics import Metrics
from fastpaca.raft.kv import LevelDBKV, WriteBatch
from fastpaca.raft.messages import Entry
from fastpaca.store.commands import Command, UpsertConversation, encode_command
from fastpaca.store.fsm import ConversationStateMachine
from fastpaca.store.messages import NewMessage, build_append
from fastpaca.store.reads import StoreReader
from tests.support.ports import free_port

GROUP = 0
CONVERSATIONS = 3_000


class _NoEngine:
    async def propose(self, group_id: int, command: bytes, *, timeout_s: float) -> object:
        raise AssertionError("nothing is copied while Postgres is down, so nothing is acked")


class _LeadsGroupZero:
    def led_groups(self) -> dict[int, int]:
        return {GROUP: 1}


def _backlog(kv: LevelDBKV) -> None:
    """CONVERSATIONS conversations with one message each, none archived."""
    fsm = ConversationStateMachine(kv)
    index = itertools.count(1)
    commands: list[Command] = []
    message = NewMessage(role="user", parts=[{"type": "text", "text": "hi"}], metadata={})
    for number in range(CONVERSATIONS):
        cid = f"c{number}"
        commands.append(UpsertConversation(conversation_id=cid, metadata_json=None, now_ms=1))
        commands.append(build_append(cid, [message], now_ms=2, is_batch=False)[0])
    batch = WriteBatch(kv)
    entries = [Entry(index=next(index), term=1, data=encode_command(c)) for c in commands]
    fsm.apply(GROUP, entries, batch)
    kv.write(batch, sync=False)


async def test_a_flush_over_a_large_backlog_yields_to_the_event_loop(tmp_path: Path) -> None:
    kv = LevelDBKV(str(tmp_path / "kv"))
    _backlog(kv)
    reader = StoreReader(kv)
    reads = 0
    real_state = reader.state

    def counting_state(group_id: int, conversation_id: str) -> object:
        nonlocal reads
        reads += 1
        return real_state(group_id, conversation_id)

    reader.state = counting_state  # type: ignore[assignment,method-assign]
    store = PostgresArchive(f"postgresql://nobody@127.0.0.1:{free_port()}/none", pool_size=1)
    await store.open()
    metrics = Metrics()
    archiver = Archiver(
        store=store,
        reader=reader,
        engine=_NoEngine(),  # type: ignore[arg-type]
        leadership=_LeadsGroupZero(),
        metrics=metrics,
        flush_interval_s=1.0,
        batch_size=100,
        tail_keep=10,
        propose_timeout_s=1.0,
    )
    longest_stall = 0

    async def watch_the_loop() -> None:
        """Reads done between two turns of another task on the loop."""
        nonlocal longest_stall
        seen = reads
        while True:
            await asyncio.sleep(0)
            longest_stall = max(longest_stall, reads - seen)
            seen = reads

    watcher = asyncio.create_task(watch_the_loop())
    try:
        with pytest.raises(ArchiveUnavailable):  # after collecting, before copying
            await archiver.flush()
    finally:
        watcher.cancel()
        await store.close()
        kv.close()
    assert reads == 2 * CONVERSATIONS  # the pass before the copy and the one after
    assert longest_stall <= COLLECT_YIELD_EVERY, longest_stall
    pending = metrics.registry.get_sample_value("fastpaca_archive_pending_conversations")
    assert pending == CONVERSATIONS
