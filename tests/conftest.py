"""Suite-wide pytest options. Options must be registered in the root conftest
so that `pytest tests` and `pytest tests/sim` both accept them."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fastpaca simulation")
    group.addoption(
        "--sim-seeds",
        type=int,
        default=int(os.environ.get("FASTPACA_SIM_SEEDS", "200")),
        help="how many random simulator seeds to run (default 200; `make soak` runs thousands)",
    )
    group.addoption(
        "--seed",
        type=int,
        default=None,
        help="replay exactly one simulator seed (printed by a failing run)",
    )
