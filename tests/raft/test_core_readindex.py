"""ReadIndex (Raft thesis §6.4): linearizable reads without writing the log."""

from __future__ import annotations

import pytest

from fastpaca.errors import NotLeader
from fastpaca.raft.messages import MessageType, ReadState
from tests.raft.harness import GROUP_ID, Network


def heartbeats(net: Network, context: bytes) -> list[str]:
    return [m.to for m in net.queue if m.type is MessageType.HEARTBEAT and m.context == context]


def test_leader_read_waits_for_a_quorum_heartbeat_round() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    index, _ = net["a"].propose(b"write")
    net.stabilize()
    net["a"].read_index(b"r1")
    net.process_ready("a")
    assert sorted(heartbeats(net, b"r1")) == ["b", "c"]
    assert net.replicas["a"].read_states == [], "not before leadership is confirmed"
    net.stabilize()
    assert net.replicas["a"].read_states == [ReadState(index=index, context=b"r1")]


def test_leader_read_is_not_served_without_a_quorum() -> None:
    net = Network(["a", "b", "c"], check_quorum=False)
    net.elect("a")
    net.isolate("a")
    net["a"].read_index(b"r")
    net.tick(5)
    assert net.replicas["a"].read_states == []
    net.heal()
    net.tick(1)  # the next heartbeat carries the pending read's context
    assert [rs.context for rs in net.replicas["a"].read_states] == [b"r"]


def test_single_voter_leader_answers_at_once() -> None:
    net = Network(["a"])
    net.elect("a")
    net["a"].read_index(b"solo")
    rd = net.process_ready("a")
    assert rd is not None
    assert rd.read_states == [ReadState(index=net["a"].commit_index, context=b"solo")]


def test_reads_are_batched_into_one_heartbeat_round() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    for context in (b"r1", b"r2", b"r3"):
        net["a"].read_index(context)
    rd = net.process_ready("a")
    assert rd is not None
    beats = [m for m in rd.messages if m.type is MessageType.HEARTBEAT]
    assert len(beats) == 2 and {m.context for m in beats} == {b"r3"}
    net.stabilize()
    assert [rs.context for rs in net.replicas["a"].read_states] == [b"r1", b"r2", b"r3"]


def test_follower_read_is_forwarded_and_answered_with_leader_commit() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    index, _ = net["a"].propose(b"write")
    net.stabilize()
    net["b"].read_index(b"from-b")
    rd = net.process_ready("b")
    assert rd is not None
    assert [(m.type, m.to) for m in rd.messages] == [(MessageType.READ_INDEX, "a")]
    net.stabilize()
    assert net.replicas["b"].read_states == [ReadState(index=index, context=b"from-b")]
    assert net.replicas["a"].read_states == []


def test_new_leader_defers_reads_until_it_commits_an_entry_of_its_term() -> None:
    net = Network(["a", "b", "c"], pre_vote=False)
    net["a"].campaign()
    net.process_all()
    net.deliver()  # vote requests
    net.process_all()
    net.deliver()  # votes: a is leader, its no-op is not committed
    assert net["a"].is_leader
    noop_index = net["a"].last_index
    assert net["a"].commit_index < noop_index
    net["a"].read_index(b"early")
    net.process_ready("a")
    assert heartbeats(net, b"early") == [], "no read round before the own-term commit"
    net.stabilize()
    assert net.replicas["a"].read_states == [ReadState(index=noop_index, context=b"early")]


def test_read_without_known_leader_raises_not_leader() -> None:
    net = Network(["a", "b", "c"])
    with pytest.raises(NotLeader) as caught:
        net["b"].read_index(b"x")
    assert caught.value.leader_hint is None and caught.value.group_id == GROUP_ID


def test_deposed_leader_never_confirms_a_read() -> None:
    net = Network(["a", "b", "c"], check_quorum=False)
    net.elect("a")
    net.isolate("a")
    net["a"].read_index(b"stale")
    net["b"].campaign()
    net.stabilize()
    assert net["b"].is_leader
    net["b"].propose(b"newer write")
    net.stabilize()
    net.tick(3, nodes=["a"])
    net.heal()
    net.tick(3)
    assert net.replicas["a"].read_states == []
    assert not net["a"].is_leader
