"""Options for the raft core tests."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("fastpaca raft").addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite tests/raft/testdata/*.txt transcripts with the actual output",
    )
