"""Scenarios drawn in the Raft paper: Figure 7 (followers with missing and
extra entries) and Figure 8 (why a leader commits only entries of its term)."""

from __future__ import annotations

import pytest

from fastpaca.raft.messages import Entry, HardState, Message, MessageType
from tests.raft.harness import GROUP_ID, Network

LEADER_LOG = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIGURE_7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


def seed_log(net: Network, node_id: str, terms: list[int], term: int) -> None:
    storage = net.replicas[node_id].storage
    storage.append([Entry(index=i, term=t, data=b"%d" % i) for i, t in enumerate(terms, 1)])
    storage.set_hard_state(HardState(term=term))
    net.restart(node_id)


@pytest.mark.parametrize("scenario", sorted(FIGURE_7_FOLLOWERS))
def test_figure_7_leader_brings_any_follower_log_in_line_5_3(scenario: str) -> None:
    """§5.3: the leader forces followers' logs to duplicate its own: missing
    entries are sent, conflicting extra entries are deleted."""
    net = Network(["leader", "voter", "follower"], pre_vote=False)
    seed_log(net, "leader", LEADER_LOG, term=7)
    seed_log(net, "voter", LEADER_LOG, term=7)
    seed_log(net, "follower", FIGURE_7_FOLLOWERS[scenario], term=7)
    rejects: list[Message] = []

    def count_rejects(msg: Message) -> bool:
        if msg.type is MessageType.APPEND_RESP and msg.reject:
            rejects.append(msg)
        return False

    net.filter = count_rejects
    net.elect("leader")
    assert net["leader"].term == 8
    assert net.log("follower") == net.log("leader")
    assert net.log("leader")[:10] == list(enumerate(LEADER_LOG, 1))
    # The term-based hint skips a whole conflicting term per round trip.
    assert len(rejects) <= 2, f"{len(rejects)} rejections to converge"


def test_figure_7_rejection_hint_skips_conflicting_terms() -> None:
    net = Network(["leader", "voter", "follower"], pre_vote=False)
    seed_log(net, "leader", LEADER_LOG, term=7)
    seed_log(net, "voter", LEADER_LOG, term=7)
    seed_log(net, "follower", FIGURE_7_FOLLOWERS["f"], term=7)
    net["leader"].campaign()
    net.process_all()
    net.deliver()  # votes out
    net.process_all()
    net.deliver()  # votes back; leader now appends its no-op
    net.process_all()
    net.deliver(only=lambda m: m.to == "follower")  # the first probe: index 10, term 6
    reply = next(m for m in net.replicas["follower"].node.ready().messages if m.reject)
    # Follower f holds term 3 at index 10; its hint names that term so the
    # leader can jump below every entry of terms 4-6 at once.
    assert (reply.index, reply.reject_hint, reply.log_term) == (10, 10, 3)


def figure_8_cluster() -> Network:
    """Figure 8 (c): s1 leads again in a later term with its term-2 entry at
    index 2 on s1 and s2 only; s5 holds a term-3 entry at index 2."""
    net = Network(["s1", "s2", "s3", "s4", "s5"], pre_vote=False)
    seed_log(net, "s1", [1, 2], term=3)
    seed_log(net, "s2", [1, 2], term=3)
    seed_log(net, "s3", [1], term=3)
    seed_log(net, "s4", [1], term=3)
    seed_log(net, "s5", [1, 3], term=3)
    net.isolate("s5")
    net.elect("s1")
    return net


def append_ack(sender: str, term: int, index: int) -> Message:
    return Message(
        type=MessageType.APPEND_RESP,
        group_id=GROUP_ID,
        sender=sender,
        to="s1",
        term=term,
        index=index,
    )


def test_figure_8_old_term_entry_is_not_committed_by_counting_replicas_5_4_2() -> None:
    """§5.4.2: an entry from a previous term on a majority is not committed."""
    net = Network(["s1", "s2", "s3", "s4", "s5"], pre_vote=False)
    seed_log(net, "s1", [1, 2], term=3)
    seed_log(net, "s2", [1, 2], term=3)
    for node_id in ("s3", "s4"):
        seed_log(net, node_id, [1], term=3)
    seed_log(net, "s5", [1, 3], term=3)
    leader = net["s1"]
    leader.campaign()
    net.process_all()
    net.queue.clear()
    for voter in ("s2", "s3"):
        leader.step(
            Message(type=MessageType.VOTE_RESP, group_id=GROUP_ID, sender=voter, to="s1", term=4)
        )
    assert leader.is_leader and leader.term == 4
    net.process_ready("s1")  # persist the no-op at index 3 (term 4)
    # s2 and s3 now hold index 2 (term 2): with s1 that is a majority of 5.
    leader.step(append_ack("s2", 4, 2))
    leader.step(append_ack("s3", 4, 2))
    assert leader.commit_index < 2, "counted replicas of a term-2 entry"
    # Once the term-4 entry is on a majority, it commits, and index 2 with it.
    leader.step(append_ack("s2", 4, 3))
    leader.step(append_ack("s3", 4, 3))
    assert leader.commit_index == 3


def test_figure_8_entry_that_could_be_overwritten_never_applies() -> None:
    """Figure 8 (d): s5 can still win and overwrite index 2, so nobody may
    apply s1's term-2 entry before s1 commits an entry of its own term."""
    net = Network(["s1", "s2", "s3", "s4", "s5"], pre_vote=False, check_quorum=False)
    seed_log(net, "s1", [1, 2], term=3)
    seed_log(net, "s2", [1, 2], term=3)
    for node_id in ("s3", "s4"):
        seed_log(net, node_id, [1], term=3)
    seed_log(net, "s5", [1, 3], term=3)
    # s1 wins term 4 but crashes before its no-op reaches anyone.
    net.partition(["s1"], ["s2", "s3", "s4", "s5"])
    net["s1"].campaign()
    net.stabilize()
    net.heal()
    net.cut |= {("s1", peer) for peer in ("s2", "s3", "s4", "s5")}
    net["s5"].campaign()  # term 5: s2, s3, s4 vote (s5's last term 3 beats 2)
    net.stabilize()
    assert net["s5"].is_leader
    net.heal()
    net.isolate("s1")
    net["s5"].propose(b"new")
    net.stabilize()
    for node_id in ("s2", "s3", "s4", "s5"):
        assert net.log(node_id)[1] == (2, 3), "index 2 is s5's term-3 entry"
        assert [e.term for e in net.replicas[node_id].applied][:2] == [1, 3]


def test_figure_8_committed_cluster_log_is_unique() -> None:
    net = figure_8_cluster()
    net.heal()
    net["s1"].propose(b"after")
    net.tick(2)  # heartbeats reach s5 and unblock its probe
    logs = {net.log(node_id)[1] for node_id in ("s1", "s2", "s3", "s4", "s5")}
    assert logs == {(2, 2)}, "s5's uncommitted term-3 entry is replaced"
