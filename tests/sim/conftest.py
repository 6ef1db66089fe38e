"""Fixtures for the simulation tests: which seeds to run.

The options themselves (``--seed``, ``--sim-seeds``) are registered in the
root ``tests/conftest.py`` so that ``pytest tests`` accepts them too.
``FASTPACA_SIM_SEED_BASE`` shifts the seed range so a soak run can explore
seeds the default run never sees.
"""

from __future__ import annotations

import os

import pytest


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
