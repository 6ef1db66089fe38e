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


def test_learner_never_campaigns_and_its_vote_never_counts() -> None:
    net = with_learner()
    assert net["d"].term == net["a"].term, "the leader probes a new member at once"
    net.tick(60, nodes=["d"])
    assert net["d"].role is Role.FOLLOWER and net["d"].term == net["a"].term
    net.isolate("b")
    net.isolate("c")
    net.tick(25, nodes=["a", "d"])  # a steps down (check-quorum) and campaigns
    assert not net.leaders(), "a plus a learner's vote is no quorum"
    assert net["d"].role is Role.FOLLOWER


def test_learner_promoted_behind_its_back_still_answers_votes() -> None:
    """etcd's case for learners answering vote requests: c is promoted by a
    change committed on {a, b} that c never received; with a gone, b can win
    only with c's vote, and c still believes it is a learner."""
    net = Network(["a", "b"], learners=["c"], pre_vote=False)
    net.elect("a")
    net.isolate("c")
    net["a"].propose_conf_change(ConfChange(op=ConfChangeOp.ADD_VOTER, node_id="c"))
    net.stabilize()
    assert net["b"].conf_state.voters == ("a", "b", "c")
    assert net["c"].conf_state.learners == ("c",)
    net.tick(20, nodes=["c"])  # c's leader lease runs out
    net.heal()
    net.isolate("a")
    net["b"].campaign()
    net.stabilize()
    assert net["b"].is_leader
    net.tick(2)
    assert net["c"].conf_state.voters == ("a", "b", "c")


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


def test_newly_added_voter_gets_votes_from_a_member_that_has_not_applied_it() -> None:
    """b holds the unapplied ADD_VOTER c, so it cannot rule c out as a
    stranger: it answers c's vote request, and c (with b) can replace a."""
    net = Network(["a", "b"])
    net.add_node("c", conf=ConfState(voters=("a", "b")))
    net.elect("a")
    index, _ = net["a"].propose_conf_change(ConfChange(op=ConfChangeOp.ADD_VOTER, node_id="c"))
    net.process_ready("a")
    net.deliver()  # the entry reaches b and c
    net.process_all()
    net.deliver()  # their acks: a commits
    net.cut.add(("a", "b"))  # b never learns that it committed
    net.stabilize()
    assert net["c"].conf_state.voters == ("a", "b", "c")
    assert net["b"].commit_index < index and net["b"].last_index >= index
    net.isolate("a")
    net.tick(25, nodes=["b"])  # b's lease on a runs out (pre-vote keeps its term)
    dropped = net["b"].dropped_messages
    net["c"].campaign()
    net.stabilize()
    assert net["c"].is_leader, "b must answer c although c is not yet a member for b"
    assert net["b"].dropped_messages == dropped


def test_voter_far_behind_under_an_old_membership_answers_the_new_candidate() -> None:
    """Found by simulator seed 400425. c misses every change from (a, b, c)
    to (c, d): d added, b removed, then a removed (committed by a and d).
    a steps down; the only voters left are d, up to date, and c, which
    still believes in (a, b, c) and holds no unapplied change. If c ignored
    d as a stranger, d could never win, c could never win (a and b have
    longer logs), and the group would stay without a leader for ever."""
    net = Network(["a", "b", "c"])
    net.add_node("d", conf=ConfState(voters=("a", "b", "c")))
    net.elect("a")
    net.isolate("c")
    for change in (
        ConfChange(op=ConfChangeOp.ADD_VOTER, node_id="d"),
        ConfChange(op=ConfChangeOp.REMOVE, node_id="b"),
        ConfChange(op=ConfChangeOp.REMOVE, node_id="a"),
    ):
        net["a"].propose_conf_change(change)
        net.stabilize()
    assert net["d"].conf_state.voters == ("c", "d")
    assert net["c"].conf_state.voters == ("a", "b", "c")
    assert not net.leaders()
    net.heal()
    net.tick(100, nodes=["c", "d"])
    assert net.leader().node_id == "d"
    net.stabilize()
    assert net["c"].conf_state.voters == ("c", "d")
    assert net["c"].commit_index == net["d"].commit_index
