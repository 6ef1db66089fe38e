"""Fixtures for the simulation tests: which seeds to run.

The options themselves (``--seed``, ``--sim-seeds``) are registered in the
root ``tests/conftest.py`` so that ``pytest tests`` accepts them too.
``FASTPACA_SIM_SEED_BASE`` shifts the seed range so a soak run can explore
seeds the default run never sees; ``FASTPACA_SIM_SAFETY_MS`` lengthens each
run's fault phase (default 2000 ms of simulated time).
"""

from __future__ import annotations

import os

import pytest

from .simulator import DEFAULT_SAFETY_MS


@pytest.fixture
def sim_seeds(request: pytest.FixtureRequest) -> list[int]:
    """``[--seed]`` when replaying one seed, else ``--sim-seeds`` seeds from the base."""
    seed = request.config.getoption("--seed", default=None)
    if seed is not None:
        return [int(seed)]
    count = int(request.config.getoption("--sim-seeds", default=200))
    base = int(os.environ.get("FASTPACA_SIM_SEED_BASE", "0"))
    return list(range(base, base + count))


@pytest.fixture
def replay_seed(request: pytest.FixtureRequest) -> int | None:
    seed = request.config.getoption("--seed", default=None)
    return None if seed is None else int(seed)


@pytest.fixture
def sim_safety_ms() -> int:
    return int(os.environ.get("FASTPACA_SIM_SAFETY_MS", DEFAULT_SAFETY_MS))
