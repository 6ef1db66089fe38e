"""Run many seeds of one level and report every failure reproducibly.

Owns the loop the tests share: build a ``Simulator`` per seed (with a fresh
temp dir for LevelDB), run it, collect results, and turn failures into one
assertion message in which each failure ends with its ``reproduce:`` line.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

from .simulator import Level, SimResult, SimulationFailure, Simulator

__all__ = ["LevelFactory", "run_one", "run_seeds"]

MAX_REPORTED_FAILURES = 3

LevelFactory = Callable[[Simulator, str], Level]
"""Builds a level for a simulator, given a temp dir for its disks."""


def run_one(
    seed: int,
    level_factory: LevelFactory,
    *,
    safety_ms: int,
    overrides: dict[str, Any] | None = None,
) -> SimResult:
    with tempfile.TemporaryDirectory(prefix=f"fastpaca-sim-{seed}-") as directory:
        sim = Simulator(
            seed, lambda s: level_factory(s, directory), safety_ms=safety_ms, overrides=overrides
        )
        return sim.run()


def run_seeds(
    seeds: Iterable[int],
    level_factory: LevelFactory,
    *,
    safety_ms: int,
    overrides: dict[str, Any] | None = None,
) -> tuple[list[SimResult], float]:
    """Run every seed, even past failures (one bug must not hide another);
    raise a summary of the failures. Returns results and seconds."""
    started = time.perf_counter()
    results = []
    failures: list[str] = []
    for seed in seeds:
        try:
            results.append(run_one(seed, level_factory, safety_ms=safety_ms, overrides=overrides))
        except SimulationFailure as failure:
            failures.append(str(failure))
        except Exception as exc:  # the harness itself broke: still name the seed
            failures.append(
                f"seed {seed}: {type(exc).__name__}: {exc}\n"
                f"reproduce: pytest tests/sim --seed={seed}"
            )
    if failures:
        shown = "\n\n".join(failures[:MAX_REPORTED_FAILURES])
        raise SimulationFailure(
            f"{len(failures)} of {len(failures) + len(results)} seeds failed; "
            f"the first {min(len(failures), MAX_REPORTED_FAILURES)}:\n\n{shown}"
        )
    return results, time.perf_counter() - started
