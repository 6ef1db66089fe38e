"""The harness can fail: plant known bugs and require some seed to catch them.

Each test runs seeds until one fails (bounded), and checks the failure is
reported the way a real one would be (rule broken + ``reproduce:`` line).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fastpaca.raft.log import RaftLog

from .level1 import CoreLevel
from .level2 import HostLevel
from .process import CrashPoint
from .runner import LevelFactory, run_one
from .simulator import SimulationFailure

SAFETY_RULES = (
    "election safety",
    "leader completeness",
    "log matching",
    "commit stability",
    "apply order",
    "exactly once",
    "state machine safety",
    "durability",
    "linearizable read",
    "persisted commit",
)
MAX_SEEDS = 120
CRASH_HEAVY = {"crash_interval_ms": 100, "max_down": 1, "write_fault_rate": 0.0}
"""Planted durability bugs show only when crashes land at the right moment:
crash often (one node at a time) so a few seeds suffice."""
SHORT_LIVENESS = {"liveness_ms_max": 2_000}
"""These tests want safety violations; do not wait long on a stuck run."""


def first_failure(
    level_factory: LevelFactory, wanted: Callable[[str], bool], overrides: dict[str, Any]
) -> str:
    """The report of the first seed whose failure ``wanted`` accepts."""
    for seed in range(MAX_SEEDS):
        try:
            run_one(seed, level_factory, safety_ms=2_000, overrides=overrides)
        except SimulationFailure as failure:
            report = str(failure)
            assert f"reproduce: pytest tests/sim --seed={seed}" in report
            if wanted(report):
                return report
    raise AssertionError(f"the planted bug survived {MAX_SEEDS} seeds")


def breaks_safety(report: str) -> bool:
    return any(rule in report for rule in SAFETY_RULES)


def test_votes_for_stale_logs_break_safety(monkeypatch: pytest.MonkeyPatch) -> None:
    """Voters that skip §5.4.1's up-to-date check elect leaders missing
    committed entries, which then overwrite them."""
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, index, term: True)
    report = first_failure(
        lambda sim, directory: HostLevel(sim, directory), breaks_safety, SHORT_LIVENESS
    )
    assert breaks_safety(report)


def test_a_disk_that_lies_about_fsync_breaks_safety() -> None:
    """Half the synced writes stay in a volatile cache and vanish on crash:
    acknowledged entries and votes are lost."""
    report = first_failure(
        lambda sim, directory: HostLevel(sim, directory, lie_about_sync=0.5),
        breaks_safety,
        CRASH_HEAVY | SHORT_LIVENESS,
    )
    assert breaks_safety(report)


def test_sending_before_persisting_breaks_safety() -> None:
    """A driver that sends (acks, votes) before its write is durable; it
    shows when a crash lands between the send and the write."""
    report = first_failure(
        lambda sim, directory: CoreLevel(sim, send_before_persist=True),
        breaks_safety,
        CRASH_HEAVY | SHORT_LIVENESS | {"crash_points": (CrashPoint.BEFORE_WRITE,)},
    )
    assert breaks_safety(report)
