"""Level 1 simulation: bare Raft cores over MemoryStorage, many seeds.

Each seed is one complete run (safety phase with faults, then liveness); the
first failing seed fails the test with a ``reproduce:`` line.
"""

from __future__ import annotations

from .level1 import CoreLevel
from .runner import run_one, run_seeds
from .simulator import Level, Simulator


def core_level(sim: Simulator, directory: str) -> Level:
    return CoreLevel(sim)


def test_core_level_seeds(sim_seeds: list[int], sim_safety_ms: int) -> None:
    results, seconds = run_seeds(sim_seeds, core_level, safety_ms=sim_safety_ms)
    assert len(results) == len(sim_seeds)
    # The runs did real work: leaders were elected and proposals acknowledged.
    assert sum(r.stats["acked"] for r in results) > 0
    assert sum(r.stats["terms"] for r in results) >= len(results)
    if len(results) >= 50:
        for feature in ("snapshots", "conf_changes", "transfers", "crashes", "reads"):
            assert sum(r.stats[feature] for r in results) > 0, f"no {feature} exercised"
    print(f"{len(results)} core-level seeds in {seconds:.1f}s")


def test_core_level_seed_replays_exactly(replay_seed: int | None) -> None:
    seed = 7 if replay_seed is None else replay_seed
    first = run_one(seed, core_level, safety_ms=2_000)
    second = run_one(seed, core_level, safety_ms=2_000)
    assert first.digest == second.digest
    assert first.stats == second.stats
    other = run_one(seed + 1, core_level, safety_ms=2_000)
    assert other.digest != first.digest
