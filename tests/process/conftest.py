"""Fixtures starting real node processes; every one is killed at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from node_process import NodeProcess


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    nodes: list[NodeProcess] = []

    def make(**env: str) -> NodeProcess:
        node = NodeProcess(tmp_path / f"data-{len(nodes)}", tmp_path, **env)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.kill()
