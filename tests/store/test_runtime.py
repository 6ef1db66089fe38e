"""The runtime's retry and error policy, with a scripted engine.

The engine here is a deterministic stand-in that answers each proposal from a
script, so every retry path is exercised on purpose; the state machine behind
it is the real one on a real LevelDB.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fastpaca.errors import (
    ConversationNotFound,
    IdempotencyConflict,
    LeadershipLost,
    NotLeader,
    ProposalDropped,
    ProposalTimeout,
    SequenceConflict,
    Unavailable,
)
from fastpaca.raft.kv import LevelDBKV, WriteBatch
from fastpaca.raft.messages import Entry
from fastpaca.store.fsm import ConversationStateMachine
from fastpaca.store.messages import NewMessage
from fastpaca.store.reads import StoreReader
from fastpaca.store.runtime import ConversationRuntime


class ScriptedEngine:
    """Applies proposals to the real state machine, after raising the
    scripted errors first. ``apply_then_fail`` applies and still raises,
    like a leader change that lost the reply but not the entry."""

    def __init__(self, kv: LevelDBKV, group_count: int) -> None:
        self.kv = kv
        self.fsm = ConversationStateMachine(kv)
        self.script: list[Exception | Callable[[], Exception]] = []
        self.proposals = 0
        self.reads = 0

    def _apply(self, group_id: int, data: bytes) -> Any:
        batch = WriteBatch(self.kv)
        index = self.fsm.applied_index(group_id) + 1
        (result,) = self.fsm.apply(group_id, [Entry(index=index, term=1, data=data)], batch)
        self.kv.write(batch, sync=True)
        return result

    async def propose(self, group_id: int, data: bytes, *, timeout_s: float) -> Any:
        self.proposals += 1
        if self.script:
            step = self.script.pop(0)
            if callable(step) and not isinstance(step, Exception):
                self._apply(group_id, data)
                raise step()
            raise step
        return self._apply(group_id, data)

    async def read_barrier(self, group_id: int, *, timeout_s: float) -> None:
        self.reads += 1
        if self.script:
            raise self.script.pop(0)  # type: ignore[misc]


@pytest.fixture
def engine(kv: LevelDBKV) -> ScriptedEngine:
    return ScriptedEngine(kv, 8)


@pytest.fixture
def runtime(engine: ScriptedEngine, kv: LevelDBKV) -> ConversationRuntime:
    return ConversationRuntime(
        engine=engine, reader=StoreReader(kv), group_count=8, request_timeout_s=0.5
    )


REPO = Path(__file__).resolve().parents[2]
MESSAGE = [NewMessage(role="user", parts=[{"type": "text", "text": "hi"}], metadata={})]


async def test_refused_proposals_are_retried(
    runtime: ConversationRuntime, engine: ScriptedEngine
) -> None:
    engine.script = [NotLeader(0, None), ProposalDropped("transfer")]
    result = await runtime.upsert("c", None)
    assert result.created and engine.proposals == 3


async def test_unknown_outcome_without_key_is_unavailable(
    runtime: ConversationRuntime, engine: ScriptedEngine
) -> None:
    await runtime.upsert("c", None)
    engine.script = [lambda: LeadershipLost(0, None)]
    with pytest.raises(Unavailable, match="idempotency key"):
        await runtime.append("c", MESSAGE, is_batch=False)
    assert engine.proposals == 2  # not repeated: it may have applied (it did)


async def test_unknown_outcome_with_key_is_retried_and_deduped(
    runtime: ConversationRuntime, engine: ScriptedEngine
) -> None:
    await runtime.upsert("c", None)
    engine.script = [lambda: ProposalTimeout("slow")]
    result = await runtime.append("c", MESSAGE, is_batch=False, idempotency_key="k")
    # The first attempt applied; the retry found its key and answered it.
    assert result.deduped and result.items[0].seq == 1
    view = await runtime.get("c")
    assert view.state.last_seq == 1


async def test_no_leader_until_the_deadline_is_unavailable(
    runtime: ConversationRuntime, engine: ScriptedEngine
) -> None:
    engine.script = [NotLeader(0, None)] * 1000
    with pytest.raises(Unavailable):
        await runtime.upsert("c", None)
    engine.script = [NotLeader(0, None)] * 1000
    with pytest.raises(Unavailable):
        await runtime.get("c")


async def test_refusals_become_domain_errors(runtime: ConversationRuntime) -> None:
    with pytest.raises(ConversationNotFound):
        await runtime.append("ghost", MESSAGE, is_batch=False)
    with pytest.raises(ConversationNotFound):
        await runtime.get("ghost")
    await runtime.upsert("c", None)
    await runtime.append("c", MESSAGE, is_batch=False, idempotency_key="k")
    with pytest.raises(SequenceConflict) as conflict:
        await runtime.append("c", MESSAGE, is_batch=False, if_version=5)
    assert conflict.value.current_version == 1
    other = [NewMessage(role="user", parts=[{"type": "text", "text": "other"}], metadata={})]
    with pytest.raises(IdempotencyConflict):
        await runtime.append("c", other, is_batch=False, idempotency_key="k")


async def test_reads_pass_the_barrier_first(
    runtime: ConversationRuntime, engine: ScriptedEngine
) -> None:
    await runtime.upsert("c", None)
    before = engine.reads
    await runtime.tail("c", limit=10, offset=0)
    await runtime.replay("c", from_seq=0, limit=10)
    assert engine.reads == before + 2


def test_placement_is_stable_across_processes(runtime: ConversationRuntime) -> None:
    ids = ["a", "support-123", "é", "x" * 200]
    code = (
        "from fastpaca.cluster.placement import group_for_conversation as g;"
        f"print([g(c, 8) for c in {ids!r}])"
    )
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert done.stdout.strip() == str([runtime.group_of(c) for c in ids])
    assert len({runtime.group_of(f"conv-{n}") for n in range(100)}) == 8
