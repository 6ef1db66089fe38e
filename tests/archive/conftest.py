"""Fixtures of the archive tests: throwaway PostgreSQL servers (never the
machine's own) and in-process nodes with the archive on."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from archive_harness import ArchiveNode, start_node

from tests.support.postgres import PostgresServer

_database_ids = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One server for the session; each test gets its own database."""
    server = PostgresServer()
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    return pg_server.create_database(f"archive_test_{next(_database_ids)}")


@pytest.fixture
def pg_private() -> Iterator[PostgresServer]:
    """A server of the test's own, for tests that stop and start it."""
    server = PostgresServer()
    yield server
    server.destroy()


@pytest.fixture
async def make_node(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    nodes: list[ArchiveNode] = []

    async def make(**env: Any) -> ArchiveNode:
        env.setdefault("FASTPACA_RAFT_DATA_DIR", str(tmp_path / "data"))
        node = await start_node(**env)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.close()
