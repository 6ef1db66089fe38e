from __future__ import annotations

import collections
import subprocess
import sys

from fastpaca.cluster.placement import group_for_conversation, rendezvous_replicas


def test_group_is_stable_across_processes() -> None:
    # Python's hash() is salted per process; ours must not be.
    code = (
        "from fastpaca.cluster.placement import group_for_conversation as g;"
        "print(g('support-123', 256), g('ünïcode', 256))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in (1, 2)
    }
    assert len(runs) == 1
    expected = (
        f"{group_for_conversation('support-123', 256)} {group_for_conversation('ünïcode', 256)}\n"
    )
    assert runs == {expected}


def test_groups_spread_evenly() -> None:
    counts = collections.Counter(group_for_conversation(f"conv-{i}", 16) for i in range(16_000))
    assert set(counts) == set(range(16))
    assert max(counts.values()) < 1.2 * 1000 and min(counts.values()) > 0.8 * 1000


def test_rendezvous_picks_three_distinct_nodes() -> None:
    nodes = ["a@h", "b@h", "c@h", "d@h", "e@h"]
    for group in range(64):
        replicas = rendezvous_replicas(group, nodes)
        assert len(replicas) == 3 == len(set(replicas))
        assert set(replicas) <= set(nodes)
        assert rendezvous_replicas(group, reversed(nodes)) == replicas


def test_rendezvous_with_fewer_nodes_than_replicas() -> None:
    assert sorted(rendezvous_replicas(7, ["x@h", "y@h"])) == ["x@h", "y@h"]
    assert rendezvous_replicas(7, []) == []


def test_adding_a_node_moves_only_what_it_wins() -> None:
    before_nodes = ["a@h", "b@h", "c@h"]
    after_nodes = [*before_nodes, "d@h"]
    moved = 0
    for group in range(256):
        before = set(rendezvous_replicas(group, before_nodes))
        after = set(rendezvous_replicas(group, after_nodes))
        if before != after:
            # the only change is the new node replacing exactly one old replica
            assert "d@h" in after and len(before - after) == 1
            moved += 1
    # d should win about 3/4 of the groups' replica sets (it takes one of 3 slots of 4)
    assert 150 < moved < 230
