"""Fixtures for state-machine tests: a real LevelDB and an apply harness."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastpaca.raft.kv import LevelDBKV, WriteBatch
from fastpaca.raft.messages import Entry
from fastpaca.store.commands import Command, encode_command
from fastpaca.store.effects import Effect
from fastpaca.store.fsm import ConversationStateMachine
from fastpaca.store.reads import StoreReader


class FsmHarness:
    """Applies commands as committed entries of one group, one WriteBatch per
    call, exactly as the driver does."""

    def __init__(self, kv: LevelDBKV, *, window: int = 10_000, group_id: int = 0) -> None:
        self.kv = kv
        self.group_id = group_id
        self.effects: list[Effect] = []
        self.fsm = ConversationStateMachine(
            kv,
            effect_sink=lambda _group, effects: self.effects.extend(effects),
            idempotency_window_appends=window,
        )
        self.reader = StoreReader(kv)
        self._index = itertools.count(self.fsm.applied_index(group_id) + 1)

    def apply(self, *commands: Command) -> list[Any]:
        batch = WriteBatch(self.kv)
        entries = [Entry(index=next(self._index), term=1, data=encode_command(c)) for c in commands]
        results = self.fsm.apply(self.group_id, entries, batch)
        self.kv.write(batch, sync=False)
        return results

    def apply_one(self, command: Command) -> Any:
        return self.apply(command)[0]


@pytest.fixture
def kv(tmp_path: Path) -> Iterator[LevelDBKV]:
    store = LevelDBKV(str(tmp_path / "db"))
    yield store
    store.close()


@pytest.fixture
def harness(kv: LevelDBKV) -> FsmHarness:
    return FsmHarness(kv)
