"""Leader election: timeouts, votes, split votes, pre-vote, check-quorum, stickiness."""

from __future__ import annotations

import random

from fastpaca.raft.core import RaftConfig, RaftNode
from fastpaca.raft.messages import ConfState, Entry, HardState, Message, MessageType
from fastpaca.raft.ready import Role
from fastpaca.raft.storage import MemoryStorage
from tests.raft.harness import GROUP_ID, Network


def tick_until_leader(net: Network, max_ticks: int = 200) -> int:
    for ticks in range(1, max_ticks + 1):
        net.tick()
        if net.leaders():
            return ticks
    raise AssertionError("no leader elected")


def test_timeouts_elect_exactly_one_leader_that_everyone_follows() -> None:
    net = Network(["a", "b", "c"])
    ticks = tick_until_leader(net)
    leader = net.leader()
    assert 10 <= ticks < 20 + 1  # randomized timeout in [T, 2T) plus one tick of pre-vote
    assert all(n.leader_id == leader.node_id for n in net.nodes)
    assert all(n.term == leader.term for n in net.nodes)


def test_single_voter_elects_itself_and_commits_alone() -> None:
    net = Network(["a"])
    tick_until_leader(net)
    index, term = net["a"].propose(b"solo")
    net.stabilize()
    assert net["a"].commit_index == index and term == net["a"].term
    assert net.applied_data("a") == [b"solo"]


def test_randomized_election_timeout_spans_t_to_2t() -> None:
    observed: set[int] = set()
    for seed in range(30):
        node = RaftNode(
            RaftConfig(node_id="a", group_id=GROUP_ID, pre_vote=False),
            MemoryStorage(conf_state=ConfState(voters=("a", "b", "c"))),
            random.Random(seed),
        )
        ticks = 0
        while node.role is Role.FOLLOWER:
            node.tick()
            ticks += 1
        observed.add(ticks)
    assert min(observed) >= 10 and max(observed) < 20
    assert len(observed) > 3, "election timeouts are not randomized"


def test_vote_granted_once_per_term_and_persisted_before_reply() -> None:
    net = Network(["a", "b", "c"], pre_vote=False)
    net["a"].campaign()
    net["c"].campaign()
    net.process_all()
    # b sees a's request first, then c's, in the same term.
    net.deliver(only=lambda m: m.to == "b" and m.sender == "a")
    net.deliver(only=lambda m: m.to == "b" and m.sender == "c")
    rd = net.process_ready("b")
    assert rd is not None and rd.hard_state is not None
    assert rd.hard_state.vote == "a" and rd.must_sync
    replies = {(m.to, m.reject) for m in rd.messages if m.type is MessageType.VOTE_RESP}
    assert replies == {("a", False), ("c", True)}


def test_voter_rejects_candidate_with_less_up_to_date_log_5_4_1() -> None:
    voter = MemoryStorage(conf_state=ConfState(voters=("a", "b", "c")))
    voter.append([Entry(index=1, term=1), Entry(index=2, term=2)])
    voter.set_hard_state(HardState(term=2))
    node = RaftNode(RaftConfig(node_id="b", group_id=GROUP_ID), voter, random.Random(1))
    cases = [(1, 2, True), (2, 1, True), (5, 1, True), (2, 2, False), (1, 3, False)]
    for index, log_term, rejected in cases:
        node.step(
            Message(
                type=MessageType.VOTE,
                group_id=GROUP_ID,
                sender="a",
                to="b",
                term=node.term + 1,
                index=index,
                log_term=log_term,
            )
        )
        reply = node.ready().messages[-1]
        assert reply.type is MessageType.VOTE_RESP
        assert reply.reject is rejected, (index, log_term)
        node.advance(node.ready()) if node.has_ready() else None


def test_split_vote_is_resolved_by_a_later_election() -> None:
    net = Network(["a", "b", "c", "d"], pre_vote=False)
    net["a"].campaign()
    net["c"].campaign()
    net.process_all()
    # a wins b, c wins d: two votes each of four, neither has a quorum of three.
    net.deliver(
        only=lambda m: m.type is MessageType.VOTE and {m.sender, m.to} in ({"a", "b"}, {"c", "d"})
    )
    net.deliver(only=lambda m: m.type is MessageType.VOTE)
    net.stabilize()
    assert not net.leaders(), "nobody may win without a quorum"
    assert all(n.term == 1 for n in net.nodes)
    tick_until_leader(net)
    assert net.leader().term >= 2


def test_candidate_returns_to_follower_on_append_from_leader_of_same_term() -> None:
    net = Network(["a", "b", "c"], pre_vote=False, check_quorum=False)
    net.elect("a")
    net.isolate("c")
    net["c"].campaign()  # term 2, nobody hears it
    net.stabilize()
    net.heal()
    net["b"].campaign()  # term 2 as well: a grants, c (voted for itself) does not
    net.stabilize()
    assert net["b"].is_leader and net["b"].term == 2
    assert net["c"].role is Role.FOLLOWER and net["c"].term == 2
    assert net["c"].leader_id == "b"


def test_pre_vote_keeps_partitioned_node_from_inflating_its_term() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    term = net["a"].term
    net.isolate("c")
    net.tick(100, nodes=["c"])
    assert net["c"].term == term, "pre-vote must not bump the term"
    assert net["c"].role is Role.PRE_CANDIDATE
    net.heal()
    net.tick(30)
    assert net["a"].is_leader and net["a"].term == term
    assert net["c"].leader_id == "a"


def test_without_pre_vote_a_rejoining_node_disrupts_the_leader() -> None:
    """The control for the test above: the same scenario with pre-vote off."""
    net = Network(["a", "b", "c"], pre_vote=False, check_quorum=False)
    net.elect("a")
    term = net["a"].term
    net.isolate("c")
    net.tick(100, nodes=["c"])
    assert net["c"].term > term + 3
    net.heal()
    net.tick(30)
    assert net.leader().term > term


def test_check_quorum_leader_steps_down_when_cut_off() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("a")
    # The first check still sees the activity of the election; the second
    # one covers a whole election timeout of silence.
    net.tick(10, nodes=["a"])
    assert net["a"].is_leader
    net.tick(10, nodes=["a"])
    assert net["a"].role is Role.FOLLOWER
    assert net["a"].leader_id is None


def test_check_quorum_keeps_leader_that_hears_from_a_quorum() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    net.tick(50, nodes=["a", "b"])
    assert net["a"].is_leader


def test_leader_stickiness_ignores_vote_requests_while_leader_is_live() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    term = net["a"].term
    net.tick(1)
    net["b"].campaign()  # b forces an election while a is healthy
    net.process_all()
    net.deliver(only=lambda m: m.type is MessageType.VOTE)
    assert net["c"].term == term, "c heard from a recently and must ignore b"
    assert net["a"].term == term


def test_higher_term_append_turns_a_leader_into_follower() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net["a"].step(
        Message(
            type=MessageType.APPEND,
            group_id=GROUP_ID,
            sender="b",
            to="a",
            term=net["a"].term + 5,
            index=net["a"].last_index,
            log_term=net["a"].log_term(net["a"].last_index),
        )
    )
    assert net["a"].role is Role.FOLLOWER
    assert net["a"].leader_id == "b"


def test_restarted_node_keeps_its_vote() -> None:
    net = Network(["a", "b", "c"], pre_vote=False)
    net["a"].campaign()
    net.stabilize()
    term = net["a"].term
    restarted = net.restart("b")
    assert restarted.term == term and restarted.vote == "a"
    restarted.step(
        Message(
            type=MessageType.VOTE,
            group_id=GROUP_ID,
            sender="c",
            to="b",
            term=term,
            index=restarted.last_index,
            log_term=restarted.log_term(restarted.last_index),
        )
    )
    assert [m.reject for m in restarted.ready().messages] == [True]


def test_non_voter_never_campaigns() -> None:
    storage = MemoryStorage(conf_state=ConfState(voters=("a", "b"), learners=("c",)))
    node = RaftNode(RaftConfig(node_id="c", group_id=GROUP_ID), storage, random.Random(3))
    for _ in range(100):
        node.tick()
    node.campaign()
    assert node.role is Role.FOLLOWER and node.term == 0 and not node.has_ready()
    empty = RaftNode(RaftConfig(node_id="z", group_id=GROUP_ID), MemoryStorage(), random.Random(3))
    for _ in range(100):
        empty.tick()
    assert empty.role is Role.FOLLOWER and not empty.has_ready()
