"""Directed reproductions of bugs the simulator found (see FINDINGS.md).

Each test pins one finding down without the simulator's randomness, on the
core test harness (``tests/raft/harness.py``), so it stays a small, stable
reproduction even when seeds change meaning.
"""

from __future__ import annotations

import random

from fastpaca.errors import InvariantViolation
from fastpaca.raft.core import RaftConfig
from fastpaca.raft.host import NodeHost
from fastpaca.raft.kv import MemoryKV
from fastpaca.raft.leveldb import LevelDBStorage
from fastpaca.raft.messages import ConfChange, ConfChangeOp, ConfState
from fastpaca.raft.testing import KVStateMachine, put_command
from tests.raft.harness import Network


def test_a_promoted_learner_that_has_not_heard_of_it_still_votes() -> None:
    """Finding 1 (sim seeds: core 19 and 45, host 153 at the time of writing).

    Voters {n2, n3}, learner n1. The leader n2 promotes n1; the change commits
    on {n2, n3} while n1 is cut off, so n1 still believes it is a learner.
    Then n2 dies. The voters are now {n1, n2, n3}: n3 needs n1's vote, and a
    core that refuses to vote while it thinks it is a learner never lets the
    group elect a leader again (etcd's raft lets learners vote for exactly
    this reason)."""
    net = Network(["n2", "n3"], learners=["n1"])
    net.elect("n2")
    net.isolate("n1")
    net["n2"].propose_conf_change(ConfChange(op=ConfChangeOp.ADD_VOTER, node_id="n1"))
    net.stabilize()
    assert set(net["n3"].conf_state.voters) == {"n1", "n2", "n3"}
    assert net["n1"].conf_state.learners == ("n1",), "n1 must not have heard of it"

    net.heal()
    net.isolate("n2")  # the leader is gone; n1 and n3 can talk
    net.tick(200, nodes=["n1", "n3"])
    assert net["n3"].is_leader or net["n1"].is_leader, "the group never elects a leader"


def test_a_wiped_and_re_created_replica_does_not_vote_a_stale_member_in() -> None:
    """Finding 2 (sim seeds: core 41, 42, 142; host 114, 125 before the
    workload stopped re-adding wiped replicas).

    n3 leads {n1, n2, n3} while n2 is down; entries commit on {n1, n3}, then
    n1 is removed and deletes its replica (config {n2, n3}). n1 is then
    re-created empty under the same id (the coordinator re-adding it), and n3
    dies. n2 comes back, still believing the config is {n1, n2, n3}: if the
    empty n1 grants its vote, n2 leads without the committed entries and
    overwrites them. In the real config {n2, n3} nobody may lead while n3 is
    down."""
    net = Network(["n1", "n2", "n3"])
    net.elect("n3")
    net.isolate("n2")
    for i in range(3):
        net["n3"].propose(b"x%d" % i)
    net.stabilize()
    net["n3"].propose_conf_change(ConfChange(op=ConfChangeOp.REMOVE, node_id="n1"))
    net.stabilize()
    committed = net["n3"].commit_index
    assert set(net["n3"].conf_state.voters) == {"n2", "n3"}
    assert net["n2"].last_index < committed, "n2 must have missed the commits"

    del net.replicas["n1"]
    net.add_node("n1", conf=ConfState())  # wiped, re-created empty
    net.heal()
    net.isolate("n3")  # n3 dies
    net.tick(200, nodes=["n1", "n2"])
    assert not net["n2"].is_leader, (
        f"n2 leads term {net['n2'].term} with log {net['n2'].last_index} < commit {committed}"
    )


def _iterate(host: NodeHost, kv: MemoryKV) -> None:
    iteration = host.prepare()
    iteration.write()
    iteration.frames()
    host.finish(iteration)


def test_re_ensuring_a_group_before_its_removal_is_written_keeps_memory_and_disk_agreed() -> None:
    """Finding 3 (sim seeds: host 129, 174 before the workload waited for the
    deletion to be written).

    ``remove_group`` only stages the deletion in the next batch. If
    ``ensure_group`` for the same group comes first (the coordinator
    re-adding the node in the same loop turn), the host opens the old log from
    the KV — the deletion is not written yet — and then the deletion lands
    underneath the live group: its core believes in a log and applied state
    the disk no longer has. Fixed by refusing ``ensure_group`` until the
    deletion is written (commit 10e2bd8)."""
    kv = MemoryKV()
    host = NodeHost(
        "n1", kv, KVStateMachine(kv), RaftConfig(node_id="n1", group_id=0), random.Random(1)
    )
    host.ensure_group(0, ["n1"])
    for _ in range(5):
        _iterate(host, kv)
    assert host.is_leader(0)
    host.propose(0, put_command(b"k", b"v"))
    for _ in range(3):
        _iterate(host, kv)
    assert KVStateMachine(kv).applied_index(0) > 0

    host.remove_group(0)
    try:
        host.ensure_group(0, [])  # join again, before the deletion is written
    except InvariantViolation:  # refusing is a fix too: the caller retries after a write
        _iterate(host, kv)
        host.ensure_group(0, [])
    _iterate(host, kv)
    on_disk = LevelDBStorage.open(kv, 0)
    assert host.core(0).last_index == on_disk.last_index(), "log in memory vs on disk"
    assert host.core(0).applied_index == KVStateMachine(kv).applied_index(0)
