"""The Raft paper's safety properties (Figure 3), one test each.

Each test drives the same seeded chaos (elections, proposals, lost, reordered
and duplicated messages, partitions, restarts) through a 5-node cluster and
checks its property after every round, so a violation is caught at the step
that causes it. The checker functions are also fed hand-made violating
histories, to show each of them can fail.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from fastpaca.errors import NotLeader, ProposalDropped
from fastpaca.raft.messages import Entry
from tests.raft.harness import Network

NODES = ["n1", "n2", "n3", "n4", "n5"]
SEEDS = [1, 2, 3, 4, 5, 6]
ROUNDS = 400


@dataclass
class History:
    leader_of_term: dict[int, str] = field(default_factory=dict)
    leader_logs: dict[tuple[str, int], list[tuple[int, int]]] = field(default_factory=dict)
    committed: dict[int, tuple[int, int]] = field(default_factory=dict)
    """index → (term of the entry, a term by which it was committed)."""


Check = Callable[[Network, History], None]


def run_chaos(seed: int, check: Check) -> Network:
    rng = random.Random(seed)
    # Odd seeds run without pre-vote and check-quorum: more disruptive elections.
    careful = seed % 2 == 0
    net = Network(NODES, seed=seed, pre_vote=careful, check_quorum=careful)
    history = History()
    net.filter = lambda _msg: rng.random() < 0.1
    proposals = 0
    for round_number in range(ROUNDS):
        if round_number % 15 == 0:
            net.heal()
            net.filter = lambda _msg: rng.random() < 0.15
            fault = rng.random()
            if fault < 0.4 and net.leaders():
                net.isolate(rng.choice(net.leaders()).node_id)
            elif fault < 0.8:
                shuffled = rng.sample(NODES, len(NODES))
                cut = rng.randint(1, 2)
                net.partition(shuffled[:cut], shuffled[cut:])
        if rng.random() < 0.02:
            net.restart(rng.choice(NODES))
        for node in net.nodes:
            if rng.random() < 0.7:
                node.tick()
        for node in net.leaders():
            if rng.random() < 0.5:
                try:
                    node.propose(b"cmd-%d" % proposals)
                    proposals += 1
                except (NotLeader, ProposalDropped):
                    pass
        net.process_all()
        rng.shuffle(net.queue)
        if net.queue and rng.random() < 0.1:
            net.queue.append(rng.choice(net.queue))  # duplicate
        net.deliver()
        check(net, history)
    # Liveness: healed, the cluster elects and converges.
    net.heal()
    net.tick(60)
    check(net, history)
    assert len(net.leaders()) == 1
    assert proposals > 20
    return net


def full_log(net: Network, node_id: str) -> list[tuple[int, int]]:
    return net.log(node_id)


def check_election_safety(net: Network, history: History) -> None:
    """§5.2: at most one leader can be elected in a given term."""
    for node in net.leaders():
        known = history.leader_of_term.setdefault(node.term, node.node_id)
        assert known == node.node_id, f"term {node.term}: leaders {known} and {node.node_id}"


def check_leader_append_only(net: Network, history: History) -> None:
    """§5.3: a leader never overwrites or deletes entries in its log."""
    for node in net.leaders():
        key = (node.node_id, node.term)
        log = full_log(net, node.node_id)
        before = history.leader_logs.get(key, [])
        assert log[: len(before)] == before, f"{key} rewrote its log"
        history.leader_logs[key] = log


def check_log_matching(net: Network, _history: History) -> None:
    """§5.3: if two logs hold an entry with the same index and term, the logs
    are identical in all entries up through that index."""
    logs = {node_id: full_log(net, node_id) for node_id in net.replicas}
    for a in logs.values():
        for b in logs.values():
            common = min(len(a), len(b))
            for position in range(common - 1, -1, -1):
                if a[position] == b[position]:
                    assert a[: position + 1] == b[: position + 1]
                    break


def check_leader_completeness(net: Network, history: History) -> None:
    """§5.4: a committed entry is in the log of every leader of a later term."""
    for node in net.nodes:
        log = dict(full_log(net, node.node_id))
        for index in range(1, node.commit_index + 1):
            history.committed.setdefault(index, (log[index], node.term))
    for leader in net.leaders():
        log = dict(full_log(net, leader.node_id))
        for index, (term, committed_by) in history.committed.items():
            if leader.term > committed_by:
                assert log.get(index) == term, f"leader {leader.node_id} lacks committed {index}"


def check_state_machine_safety(net: Network, _history: History) -> None:
    """§5.4.3: no two servers apply a different entry at the same index."""
    applied = [replica.applied for replica in net.replicas.values()]
    longest = max(applied, key=len)
    for sequence in applied:
        assert sequence == longest[: len(sequence)]
        assert [e.index for e in sequence] == list(range(1, len(sequence) + 1))


@pytest.mark.parametrize("seed", SEEDS)
def test_election_safety_5_2(seed: int) -> None:
    run_chaos(seed, check_election_safety)


@pytest.mark.parametrize("seed", SEEDS)
def test_leader_append_only_5_3(seed: int) -> None:
    run_chaos(seed, check_leader_append_only)


@pytest.mark.parametrize("seed", SEEDS)
def test_log_matching_5_3(seed: int) -> None:
    run_chaos(seed, check_log_matching)


@pytest.mark.parametrize("seed", SEEDS)
def test_leader_completeness_5_4(seed: int) -> None:
    run_chaos(seed, check_leader_completeness)


@pytest.mark.parametrize("seed", SEEDS)
def test_state_machine_safety_5_4_3(seed: int) -> None:
    net = run_chaos(seed, check_state_machine_safety)
    assert len(net.replicas["n1"].applied) > 10


# --- the checkers themselves can fail ---------------------------------------------------


def test_checkers_reject_violating_histories() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    history = History(leader_of_term={net["a"].term: "b"})
    with pytest.raises(AssertionError):
        check_election_safety(net, history)
    history = History(leader_logs={("a", net["a"].term): [(1, 99)]})
    with pytest.raises(AssertionError):
        check_leader_append_only(net, history)
    history = History(committed={1: (99, 0)})
    with pytest.raises(AssertionError):
        check_leader_completeness(net, history)
    net.replicas["b"].applied = [Entry(index=1, term=42)]
    with pytest.raises(AssertionError):
        check_state_machine_safety(net, History())


# --- directed scenarios for the election restriction ----------------------------------


def test_leader_completeness_stale_node_cannot_win_5_4_1() -> None:
    """§5.4.1: a candidate whose log lacks committed entries cannot win, so
    every later leader holds every committed entry."""
    net = Network(["a", "b", "c"], pre_vote=False, check_quorum=False)
    net.elect("a")
    net.isolate("c")
    for i in range(3):
        net["a"].propose(b"committed-%d" % i)
    net.stabilize()
    committed = net["a"].commit_index
    assert net["b"].commit_index == committed
    net.heal()
    net.isolate("a")  # the leader dies; stale c campaigns first
    net["c"].campaign()
    net.stabilize()
    assert not net["c"].is_leader
    net["b"].campaign()
    net.stabilize()
    assert net["b"].is_leader
    history = History()
    check_leader_completeness(net, history)
    assert net.log("b")[committed - 1] == net.log("a")[committed - 1]


def test_state_machine_safety_after_leader_change_5_4_3() -> None:
    net = Network(["a", "b", "c"], pre_vote=False, check_quorum=False)
    net.elect("a")
    net["a"].propose(b"x")
    net.stabilize()
    net.isolate("a")
    net["a"].propose(b"lost")  # never committed: a is cut off
    net.stabilize()
    net["b"].campaign()
    net.stabilize()
    net["b"].propose(b"y")
    net.stabilize()
    net.heal()
    net.tick(3)
    assert net.applied_data("a") == net.applied_data("b") == net.applied_data("c") == [b"x", b"y"]
    check_state_machine_safety(net, History())
