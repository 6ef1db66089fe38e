"""The lone voter's shortcut: ``ready_alone``/``advance_alone`` against the
full ``ready``/``advance`` cycle, and the cases where it must step aside."""

from __future__ import annotations

from fastpaca.raft.core import RaftNode
from fastpaca.raft.messages import ConfChange, ConfChangeOp, Entry
from fastpaca.raft.ready import Role
from tests.raft.harness import Network, Replica


def _alone() -> tuple[Network, Replica]:
    net = Network(["n1"])
    net.elect("n1")
    net.process_all()  # the new leader's empty entry, committed and applied
    return net, net.replicas["n1"]


def _state(node: RaftNode) -> tuple[object, ...]:
    return (
        node.role,
        node.term,
        node.vote,
        node.commit_index,
        node.applied_index,
        node.last_index,
        node.log_term(node.last_index),
        node.has_ready(),
    )


def _take_alone(replica: Replica) -> list[Entry]:
    """What the host does with the shortcut: persist, apply, advance."""
    node = replica.node
    taken = node.ready_alone()
    assert taken is not None
    entries, hard_state = taken
    replica.storage.append(entries)
    replica.storage.set_hard_state(hard_state)
    replica.applied.extend(entries)
    node.advance_alone(entries[-1])
    return entries


def test_the_shortcut_ends_where_ready_and_advance_end() -> None:
    full_net, full = _alone()
    _, short = _alone()
    assert _state(full.node) == _state(short.node)
    for batch in ([b"a"], [b"b", b"c", b"d"], [b"e"]):
        full.node.propose_many(batch)
        short.node.propose_many(batch)
        rd = full_net.process_ready("n1")
        assert rd is not None
        entries = _take_alone(short)

        assert entries == rd.entries == rd.committed_entries
        assert short.storage.hard_state == full.storage.hard_state
        assert [e.data for e in short.applied] == [e.data for e in full.applied]
        assert _state(short.node) == _state(full.node)
        assert not short.node.has_ready()
        assert short.node.ready_alone() is None  # nothing left to take


def test_a_pending_read_takes_the_full_ready() -> None:
    net, replica = _alone()
    node = replica.node
    node.propose(b"x")
    node.read_index(b"ctx")
    assert node.ready_alone() is None
    rd = net.process_ready("n1")
    assert rd is not None and [e.data for e in rd.entries] == [b"x"]
    assert [rs.context for rs in replica.read_states] == [b"ctx"]


def test_a_group_with_a_learner_takes_the_full_ready() -> None:
    net, replica = _alone()
    node = replica.node
    node.propose_conf_change(ConfChange(op=ConfChangeOp.ADD_LEARNER, node_id="n2"))
    # The membership change itself goes through the shortcut; applying it
    # (the host's job) makes the group one with a member to replicate to.
    entries = _take_alone(replica)
    node.apply_conf_change(ConfChange(op=ConfChangeOp.ADD_LEARNER, node_id="n2"))
    assert len(entries) == 1
    net.process_ready("n1")  # its first probe of n2
    node.propose(b"y")
    assert node.ready_alone() is None
    rd = net.process_ready("n1")
    assert rd is not None and [e.data for e in rd.entries] == [b"y"]


def test_a_follower_or_an_idle_leader_gets_nothing() -> None:
    net = Network(["n1", "n2", "n3"])
    leader = net.elect("n1")
    net.process_all()
    assert net.node("n2").role is Role.FOLLOWER
    assert net.node("n2").ready_alone() is None
    leader.propose(b"z")
    assert leader.ready_alone() is None  # two followers to replicate to

    _, replica = _alone()
    assert replica.node.ready_alone() is None  # idle: nothing proposed


def test_the_read_index_comes_at_once_only_to_a_lone_leader_with_a_commit_of_its_term() -> None:
    net = Network(["n1"])
    leader = net["n1"]
    leader.campaign()  # alone: it leads at once, with its term's first entry uncommitted
    assert leader.is_leader and leader.read_index_alone() is None
    net.process_all()
    assert leader.read_index_alone() == leader.commit_index > 0

    trio = Network(["n1", "n2", "n3"])
    leader = trio.elect("n1")
    trio.process_all()
    trio.deliver()
    trio.process_all()
    assert leader.read_index_alone() is None  # confirming it needs a round of heartbeats
    assert trio.node("n2").read_index_alone() is None


def test_a_lone_leader_ticks_without_work_but_beats_for_a_learner() -> None:
    net, replica = _alone()
    node = replica.node
    for _ in range(100):  # five election timeouts, twenty heartbeat intervals
        assert node.tick() is False
    assert node.is_leader and not node.has_ready()

    node.propose_conf_change(ConfChange(op=ConfChangeOp.ADD_LEARNER, node_id="n2"))
    _take_alone(replica)
    node.apply_conf_change(ConfChange(op=ConfChangeOp.ADD_LEARNER, node_id="n2"))
    net.process_ready("n1")  # its first probe of n2
    beats = sum(node.tick() for _ in range(20))
    assert beats > 0 and node.has_ready()
