"""Directed reproductions of bugs the simulator found (see FINDINGS.md).

Each test pins one finding down without the simulator's randomness, on the
core test harness (``tests/raft/harness.py``), so it stays a small, stable
reproduction even when seeds change meaning.
"""

from __future__ import annotations

from fastpaca.raft.messages import ConfChange, ConfChangeOp
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
