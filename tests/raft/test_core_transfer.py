"""Leadership transfer (Raft thesis §3.10): catch up, TIMEOUT_NOW, abort."""

from __future__ import annotations

import pytest

from fastpaca.errors import NotLeader, ProposalDropped
from fastpaca.raft.core import CAMPAIGN_TRANSFER
from fastpaca.raft.messages import Message, MessageType
from fastpaca.raft.ready import Role
from tests.raft.harness import Network


def test_transfer_to_an_up_to_date_follower() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    term = net["a"].term
    net["a"].transfer_leadership("b")
    with pytest.raises(ProposalDropped):
        net["a"].propose(b"during transfer")
    rd = net.process_ready("a")
    assert rd is not None
    assert [(m.type, m.to) for m in rd.messages] == [(MessageType.TIMEOUT_NOW, "b")]
    net.process_all()
    net.deliver()
    rd = net.process_ready("b")
    assert rd is not None
    votes = [m for m in rd.messages if m.type is MessageType.VOTE]
    assert votes and all(m.context == CAMPAIGN_TRANSFER for m in votes), "skips pre-vote"
    net.stabilize()
    # c still hears from a (leader stickiness) but grants a transfer campaign.
    assert net["b"].is_leader and net["b"].term == term + 1
    assert net["a"].role is Role.FOLLOWER and net["a"].leader_id == "b"
    net["b"].propose(b"after")
    net.stabilize()
    assert net.applied_data("a") == [b"after"]


def test_transfer_catches_the_target_up_before_timeout_now() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    for i in range(5):
        net["a"].propose(b"%d" % i)
    net.stabilize()
    net.heal()
    net["a"].transfer_leadership("c")
    sent: list[MessageType] = []
    for _ in range(10):
        net.process_all()
        sent.extend(m.type for m in net.queue if m.sender == "a" and m.to == "c")
        net.deliver()
    assert MessageType.TIMEOUT_NOW in sent
    assert sent.index(MessageType.TIMEOUT_NOW) > sent.index(MessageType.APPEND)
    net.stabilize()
    assert net["c"].is_leader
    assert net.applied_data("c") == [b"%d" % i for i in range(5)]


def transferee(net: Network) -> str | None:
    return net["a"].lead_transferee


def test_transfer_aborts_after_an_election_timeout() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("b")
    net["a"].transfer_leadership("b")
    assert net["a"].lead_transferee == "b"
    net.tick(9, nodes=["a", "c"])
    assert transferee(net) == "b"
    net.tick(1, nodes=["a", "c"])
    assert transferee(net) is None
    assert net["a"].is_leader
    net["a"].propose(b"accepted again")
    net.stabilize()
    assert net.applied_data("c") == [b"accepted again"]


def test_transfer_preconditions() -> None:
    net = Network(["a", "b", "c"], learners=["d"])
    net.elect("a")
    with pytest.raises(NotLeader):
        net["b"].transfer_leadership("c")
    with pytest.raises(ProposalDropped):
        net["a"].transfer_leadership("d")  # learners cannot lead
    net["a"].transfer_leadership("a")
    assert net["a"].lead_transferee is None and net["a"].is_leader


def test_learner_ignores_timeout_now() -> None:
    net = Network(["a", "b", "c"], learners=["d"])
    net.elect("a")
    term = net["a"].term
    net["d"].step(
        Message(
            type=MessageType.TIMEOUT_NOW, group_id=net["d"].group_id, sender="a", to="d", term=term
        )
    )
    assert net["d"].role is Role.FOLLOWER and net["d"].term == term and not net["d"].has_ready()
