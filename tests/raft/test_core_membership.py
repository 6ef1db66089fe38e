"""Membership changes, one server at a time (Raft thesis §4.1)."""

from __future__ import annotations

import pytest

from fastpaca.errors import ProposalDropped
from fastpaca.raft.messages import ConfChange, ConfChangeOp, ConfState, Message, MessageType
from fastpaca.raft.ready import Role
from tests.raft.harness import GROUP_ID, Network


def change(net: Network, op: ConfChangeOp, node_id: str) -> None:
    net.leader().propose_conf_change(ConfChange(op=op, node_id=node_id))
    net.stabilize()


def with_learner() -> Network:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net["a"].propose(b"before")
    net.stabilize()
    # A new replica starts knowing the membership it joins (see report).
    net.add_node("d", conf=ConfState(voters=("a", "b", "c"), learners=("d",)))
    change(net, ConfChangeOp.ADD_LEARNER, "d")
    return net


def test_learner_is_added_and_receives_the_log() -> None:
    net = with_learner()
    assert net["a"].conf_state == ConfState(voters=("a", "b", "c"), learners=("d",))
    net["a"].propose(b"after")
    net.stabilize()
    assert net.applied_data("d") == [b"before", b"after"]
    assert net["d"].conf_state == net["a"].conf_state


def test_learner_does_not_count_toward_commit() -> None:
    net = with_learner()
    net.isolate("b")
    net.isolate("c")
    index, _ = net["a"].propose(b"needs-a-voter")
    net.stabilize()
    assert net["d"].last_index >= index, "the learner has the entry"
    assert net["a"].commit_index < index, "a plus a learner is not a quorum of voters"
    net.heal()
    net.tick(2)
    assert net["a"].commit_index >= index


def test_learner_never_votes_and_never_campaigns() -> None:
    net = with_learner()
    assert net["d"].term == net["a"].term, "the leader probes a new member at once"
    net.tick(60)
    assert net["a"].is_leader
    assert net["d"].role is Role.FOLLOWER and net["d"].term == net["a"].term
    net.tick(20, nodes=["d"])  # long silence: d's leader lease is over
    net["d"].step(
        Message(
            type=MessageType.VOTE,
            group_id=GROUP_ID,
            sender="b",
            to="d",
            term=net["d"].term + 1,
            index=100,
            log_term=100,
        )
    )
    replies = [m for m in net["d"].ready().messages if m.type is MessageType.VOTE_RESP]
    assert [m.reject for m in replies] == [True]


def test_promoted_learner_votes_and_counts() -> None:
    net = with_learner()
    change(net, ConfChangeOp.ADD_VOTER, "d")
    assert net["a"].conf_state == ConfState(voters=("a", "b", "c", "d"))
    net.isolate("b")
    net.isolate("c")
    index, _ = net["a"].propose(b"x")
    net.stabilize()
    assert net["a"].commit_index < index, "2 of 4 voters is no quorum"
    net.heal()
    net.isolate("c")
    net.tick(2)
    assert net["a"].commit_index >= index, "a, b, d are a quorum of 4"


def test_removed_voter_no_longer_counts_and_its_messages_are_dropped() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    change(net, ConfChangeOp.REMOVE, "c")
    assert net["a"].conf_state == ConfState(voters=("a", "b"))
    net.isolate("b")
    index, _ = net["a"].propose(b"x")
    net.stabilize()
    assert net["a"].commit_index < index, "quorum of {a, b} needs b"
    dropped = net["a"].dropped_messages
    net["a"].step(
        Message(
            type=MessageType.APPEND_RESP,
            group_id=GROUP_ID,
            sender="c",
            to="a",
            term=net["a"].term,
            index=index,
        )
    )
    assert net["a"].dropped_messages == dropped + 1
    assert net["a"].commit_index < index, "a removed node's ack never counts"


def test_removed_leader_steps_down_and_the_rest_elect() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    change(net, ConfChangeOp.REMOVE, "a")
    assert net["a"].role is Role.FOLLOWER
    net.tick(40)
    leader = net.leader()
    assert leader.node_id in ("b", "c")
    assert leader.conf_state == ConfState(voters=("b", "c"))
    leader.propose(b"without-a")
    net.stabilize()
    assert net.applied_data(leader.node_id)[-1] == b"without-a"


def test_one_conf_change_at_a_time() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net["a"].propose_conf_change(ConfChange(op=ConfChangeOp.ADD_LEARNER, node_id="d"))
    with pytest.raises(ProposalDropped):
        net["a"].propose_conf_change(ConfChange(op=ConfChangeOp.ADD_LEARNER, node_id="e"))
    net.stabilize()
    net["a"].propose_conf_change(ConfChange(op=ConfChangeOp.ADD_LEARNER, node_id="e"))
    net.stabilize()
    assert net["a"].conf_state.learners == ("d", "e")


def test_conf_change_waits_for_own_term_commit() -> None:
    net = Network(["a", "b", "c"], pre_vote=False)
    net["a"].campaign()
    for _ in range(2):
        net.process_all()
        net.deliver()
    assert net["a"].is_leader and net["a"].commit_index < net["a"].last_index
    with pytest.raises(ProposalDropped):
        net["a"].propose_conf_change(ConfChange(op=ConfChangeOp.REMOVE, node_id="c"))
    net.stabilize()
    net["a"].propose_conf_change(ConfChange(op=ConfChangeOp.REMOVE, node_id="c"))
