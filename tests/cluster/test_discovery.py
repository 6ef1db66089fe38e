from __future__ import annotations

import pytest

from fastpaca.cluster.discovery import Member, parse_cluster_nodes, parse_node_name


def test_parse_forms() -> None:
    assert parse_node_name("n1@10.0.0.5", default_port=4000) == Member(
        "n1@10.0.0.5", "10.0.0.5", 4000
    )
    assert parse_node_name("n1@host.local:4100", default_port=4000) == Member(
        "n1@host.local:4100", "host.local", 4100
    )
    assert parse_node_name("n@[::1]:4001", default_port=4000) == Member("n@[::1]:4001", "::1", 4001)
    assert parse_node_name("n@::1", default_port=4000) == Member("n@::1", "::1", 4000)


@pytest.mark.parametrize(
    "bad", ["n1", "@host", "n1@", "n1@host:0", "n1@host:99999", "n1@host:abc", "n 1@h"]
)
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_node_name(bad, default_port=4000)


def test_cluster_nodes_list() -> None:
    members = parse_cluster_nodes("b@h2:4001, a@h1:4000\n c@h3", default_port=4002)
    assert [m.node_id for m in members] == ["a@h1:4000", "b@h2:4001", "c@h3"]
    assert members[2].port == 4002
    with pytest.raises(ValueError, match="twice"):
        parse_cluster_nodes("a@h,a@h", default_port=1)
    assert parse_cluster_nodes("  ", default_port=1) == []
