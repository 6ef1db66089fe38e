"""Level 2 simulation: real NodeHosts (LevelDBStorage, codec, chunked
snapshots, compaction, KVStateMachine) over MemoryKV (even seeds) and real
LevelDB in a temp dir (odd seeds), many seeds.

Each seed is one complete run (safety phase with faults, then liveness); the
first failing seed fails the test with a ``reproduce:`` line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .level2 import HostLevel
from .runner import run_one, run_seeds
from .simulator import Level, Simulator


def host_level(sim: Simulator, directory: str) -> Level:
    return HostLevel(sim, directory)


def test_host_level_seeds(sim_seeds: list[int], sim_safety_ms: int) -> None:
    results, seconds = run_seeds(sim_seeds, host_level, safety_ms=sim_safety_ms)
    assert len(results) == len(sim_seeds)
    # The runs did real work: leaders, acknowledged proposals, and (over
    # enough seeds) snapshots, membership changes and transfers.
    assert sum(r.stats["acked"] for r in results) > 0
    assert sum(r.stats["terms"] for r in results) >= len(results)
    if len(results) >= 50:
        for feature in ("snapshots", "conf_changes", "transfers", "crashes", "reads"):
            assert sum(r.stats[feature] for r in results) > 0, f"no {feature} exercised"
    print(f"{len(results)} host-level seeds in {seconds:.1f}s")


LONE_NODE = {
    "node_ids": ("n1",),
    "tick_ms_by_node": (10,),
    # Nothing to partition, transfer to or add: crashes, write faults and
    # restarts remain, which is what a lone voter's log folding must survive.
    "partition_interval_ms": 0,
    "transfer_interval_ms": 0,
    "conf_change_interval_ms": 0,
    "blip_interval_ms": 0,
    "link_down_rate": 0.0,
}


def test_host_level_seeds_of_a_lone_node(sim_seeds: list[int], sim_safety_ms: int) -> None:
    """Every group has one voter, so entries are folded into the log's base
    as they are applied (``LevelDBStorage.stage_fold``), across crashes."""
    results, _ = run_seeds(sim_seeds, host_level, safety_ms=sim_safety_ms, overrides=LONE_NODE)
    assert sum(r.stats["acked"] for r in results) > 0
    if len(results) >= 50:
        assert sum(r.stats["crashes"] for r in results) > 0


def test_host_level_seed_replays_exactly(replay_seed: int | None) -> None:
    seeds = [4, 5] if replay_seed is None else [replay_seed]  # memory and LevelDB
    for seed in seeds:
        first = run_one(seed, host_level, safety_ms=2_000)
        second = run_one(seed, host_level, safety_ms=2_000)
        assert first.digest == second.digest, f"seed {seed} did not replay"
        assert first.stats == second.stats


def _digest_in_subprocess(seed: int, level: str, hash_seed: str) -> str:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-m", "tests.sim.cli", str(seed), "--level", level],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return next(line.split()[1] for line in out.splitlines() if line.startswith("digest "))


@pytest.mark.parametrize("level", ["host", "core"])
def test_replay_does_not_depend_on_the_process(level: str, replay_seed: int | None) -> None:
    """Same seed in two fresh interpreters with different string-hash salts:
    set/dict order of strings must never leak into the run."""
    seed = 5 if replay_seed is None else replay_seed
    assert _digest_in_subprocess(seed, level, "1") == _digest_in_subprocess(seed, level, "2")
