"""Fast failover: ``RaftNode.leader_unreachable`` when the leader's link drops.

The IO layer calls it when the connection to a peer goes down. A follower
of that peer forgets its leader and campaigns (pre-vote) after a few ticks,
staggered by a per-group rank so survivors do not split the vote; a blip on
a link to a live leader must not depose it.
"""

from __future__ import annotations

import random

from fastpaca.raft.core import RaftConfig, RaftNode
from fastpaca.raft.messages import ConfState, Message, MessageType
from fastpaca.raft.ready import Role
from fastpaca.raft.storage import MemoryStorage
from tests.raft.harness import Network

TIMEOUT = 20
"""The production election timeout and heartbeat (``DriverConfig``)."""
HEARTBEAT = 5
STAGGER = TIMEOUT // 4
"""Ticks between two survivors' ranks."""
JITTER = STAGGER // 2
"""Random extra ticks: 0 .. JITTER - 1."""
PROD = {"election_timeout_ticks": TIMEOUT, "heartbeat_interval_ticks": HEARTBEAT}


def follower(
    node_id: str,
    *,
    leader: str = "a",
    group_id: int = 7,
    seed: int = 1,
    voters: tuple[str, ...] = ("a", "b", "c"),
    learners: tuple[str, ...] = (),
) -> RaftNode:
    """A replica of ``group_id`` at term 1 that just heard ``leader``'s heartbeat."""
    node = RaftNode(
        RaftConfig(node_id=node_id, group_id=group_id, **PROD),
        MemoryStorage(conf_state=ConfState(voters=voters, learners=learners)),
        random.Random(seed),
    )
    node.step(
        Message(type=MessageType.HEARTBEAT, group_id=group_id, sender=leader, to=node_id, term=1)
    )
    assert node.leader_id == leader and node.role is Role.FOLLOWER
    return node


def ticks_until_campaign(node: RaftNode, limit: int = 10 * TIMEOUT) -> int:
    for ticks in range(1, limit + 1):
        node.tick()
        if node.role is not Role.FOLLOWER:
            return ticks
    raise AssertionError(f"{node.node_id} never campaigned")


def ticks_until_new_leader(net: Network) -> tuple[int, str]:
    """Tick the survivors b and c until one leads: (ticks, its id)."""
    for ticks in range(1, TIMEOUT + 1):
        net.tick(nodes=["b", "c"])
        leaders = [n for n in ("b", "c") if net[n].is_leader]
        if leaders:
            assert len(leaders) == 1
            return ticks, leaders[0]
    raise AssertionError("no new leader within an election timeout")


def test_losing_the_leader_link_starts_a_pre_vote_within_a_few_ticks() -> None:
    for group_id in range(20):
        node = follower("b", group_id=group_id)
        node.leader_unreachable("a")
        assert node.leader_id is None, "the lost leader must not be kept (stickiness, hints)"
        ticks = ticks_until_campaign(node)
        # Rank 0 or 1 of two survivors, never a whole election timeout.
        assert 1 <= ticks <= 1 + STAGGER + JITTER < TIMEOUT
        assert node.role is Role.PRE_CANDIDATE, "it must still go through pre-vote"
        assert node.term == 1, "pre-vote leaves the term alone"


def test_survivors_campaign_a_stagger_apart_and_each_goes_first_in_some_groups() -> None:
    first: dict[str, int] = {"b": 0, "c": 0}
    rank0_delays: set[int] = set()
    for group_id in range(40):
        delays = {}
        for node_id in ("b", "c"):
            node = follower(node_id, group_id=group_id, seed=group_id * 2 + len(node_id))
            node.leader_unreachable("a")
            delays[node_id] = ticks_until_campaign(node)
        early, late = sorted(delays.values())
        assert early <= JITTER and late >= 1 + STAGGER, delays
        first[min(delays, key=lambda n: delays[n])] += 1
        rank0_delays.add(early)
    # The rank is per group: after a failover the new leaderships spread.
    assert first["b"] >= 8 and first["c"] >= 8, first
    assert len(rank0_delays) > 1, "the delay is not randomized"


def test_a_dead_leader_is_replaced_in_one_term_without_a_split_vote() -> None:
    for seed in range(1, 31):
        net = Network(["a", "b", "c"], seed=seed, **PROD)
        net.elect("a")
        term = net["a"].term
        net.isolate("a")  # killed: both survivors see their connection drop
        net["b"].leader_unreachable("a")
        net["c"].leader_unreachable("a")
        ticks, leader = ticks_until_new_leader(net)
        assert ticks <= 1 + JITTER, f"seed {seed}: the first-ranked survivor should win"
        assert net[leader].term == term + 1, f"seed {seed}: a split vote cost a term"
        other = "c" if leader == "b" else "b"
        assert net[other].leader_id == leader


def test_a_lagging_first_ranked_survivor_lets_the_next_one_win() -> None:
    for lagging in ("b", "c"):
        net = Network(["a", "b", "c"], **PROD)
        net.elect("a")
        net.cut.add(("a", lagging))
        net["a"].propose(b"only on the other survivor")
        net.stabilize()
        up_to_date = "c" if lagging == "b" else "b"
        assert net[up_to_date].last_index > net[lagging].last_index
        net.heal()
        net.isolate("a")
        net[lagging].leader_unreachable("a")
        net[up_to_date].leader_unreachable("a")
        ticks, leader = ticks_until_new_leader(net)
        # Whichever rank it holds, the up-to-date survivor leads well within
        # an election timeout (the lagging one's pre-vote is refused, 5.4.1).
        assert leader == up_to_date
        assert ticks <= 1 + STAGGER + JITTER


def test_a_blip_on_the_link_to_a_live_leader_does_not_depose_it() -> None:
    net = Network(["a", "b", "c"], **PROD)
    net.elect("a")
    term = net["a"].term
    net.partition(["a"], ["b"])  # only the a-b link; c still hears a
    net.partition(["b"], ["a"])
    net.cut.discard(("a", "c"))
    net["b"].leader_unreachable("a")
    net.tick(3 * TIMEOUT)
    # b pre-campaigned, but c (hearing a's heartbeats) ignored it and a never
    # saw it: nobody's term moved and a still leads.
    assert net["b"].role is Role.PRE_CANDIDATE
    assert net["a"].is_leader and net["a"].term == term
    assert net["b"].term == term and net["c"].term == term
    assert net["c"].leader_id == "a"
    net.heal()
    net.tick(HEARTBEAT + 1)
    assert net["b"].role is Role.FOLLOWER and net["b"].leader_id == "a"
    assert net["a"].is_leader and net["a"].term == term


def test_only_a_follower_losing_its_own_leader_reacts() -> None:
    node = follower("b")
    node.leader_unreachable("c")  # another follower's link: nothing to do
    assert node.leader_id == "a"
    assert ticks_until_campaign(node) >= TIMEOUT
    net = Network(["a", "b", "c"], **PROD)
    leader = net.elect("a")
    leader.leader_unreachable("b")  # a leader losing a follower: check-quorum decides
    assert leader.is_leader and not leader.has_ready()


def test_a_learner_forgets_the_leader_but_never_campaigns() -> None:
    node = follower("d", voters=("a", "b", "c"), learners=("d",))
    node.leader_unreachable("a")
    assert node.leader_id is None
    for _ in range(5 * TIMEOUT):
        node.tick()
    assert node.role is Role.FOLLOWER and node.term == 1
