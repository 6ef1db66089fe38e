"""Fixtures for state-machine tests: a real LevelDB and an apply harness."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fsm_harness import FsmHarness

from fastpaca.raft.kv import LevelDBKV


@pytest.fixture
def kv(tmp_path: Path) -> Iterator[LevelDBKV]:
    store = LevelDBKV(str(tmp_path / "db"))
    yield store
    store.close()


@pytest.fixture
def harness(kv: LevelDBKV) -> FsmHarness:
    return FsmHarness(kv)
