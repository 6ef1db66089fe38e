"""Run many seeds of one level and report the first failure reproducibly.

Owns the loop the tests share: build a ``Simulator`` per seed (with a fresh
temp dir for LevelDB), run it, collect results, and turn the first failure
into one assertion message that ends with the ``reproduce:`` line.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable

from .simulator import Level, SimResult, SimulationFailure, Simulator

__all__ = ["LevelFactory", "run_one", "run_seeds"]

LevelFactory = Callable[[Simulator, str], Level]
"""Builds a level for a simulator, given a temp dir for its disks."""


def run_one(seed: int, level_factory: LevelFactory, *, safety_ms: int) -> SimResult:
    with tempfile.TemporaryDirectory(prefix=f"fastpaca-sim-{seed}-") as directory:
        sim = Simulator(seed, lambda s: level_factory(s, directory), safety_ms=safety_ms)
        return sim.run()


def run_seeds(
    seeds: Iterable[int], level_factory: LevelFactory, *, safety_ms: int
) -> tuple[list[SimResult], float]:
    """Run every seed; raise the first failure. Returns results and seconds."""
    started = time.perf_counter()
    results = []
    for seed in seeds:
        try:
            results.append(run_one(seed, level_factory, safety_ms=safety_ms))
        except SimulationFailure:
            raise
        except Exception as exc:  # a crash inside the code under test is a failure too
            raise SimulationFailure(
                f"seed {seed}: {type(exc).__name__}: {exc}\nreproduce: pytest tests/sim --seed={seed}"
            ) from exc
    return results, time.perf_counter() - started
