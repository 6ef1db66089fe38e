"""Log replication: commit, batching, pipelining, flow control, heartbeats, Ready."""

from __future__ import annotations

import tracemalloc

import pytest

from fastpaca.errors import NotLeader, ProposalDropped
from fastpaca.raft.messages import ConfChange, ConfChangeOp, ConfState, Message, MessageType
from fastpaca.raft.progress import ProgressState
from fastpaca.raft.ready import Role
from fastpaca.raft.replication import COMMIT_ONLY
from tests.raft.harness import GROUP_ID, Network


def appends(messages: list[Message], to: str | None = None) -> list[Message]:
    return [m for m in messages if m.type is MessageType.APPEND and (to is None or m.to == to)]


def test_proposals_replicate_commit_and_apply_everywhere_in_order() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    for i in range(20):
        net["a"].propose(b"cmd-%d" % i)
    net.stabilize()
    expected = [b"cmd-%d" % i for i in range(20)]
    for node_id in "abc":
        assert net.applied_data(node_id) == expected
        assert net[node_id].commit_index == net["a"].last_index
        assert net[node_id].applied_index == net["a"].last_index


def test_new_leader_appends_an_empty_entry_of_its_term() -> None:
    net = Network(["a", "b", "c"])
    leader = net.elect("a")
    entry = leader.log_entries(leader.last_index, leader.last_index + 1)[0]
    assert entry.term == leader.term and entry.data == b""
    assert all(n.commit_index == entry.index for n in net.nodes)


def test_batching_many_proposals_go_out_as_one_append_per_follower() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    for i in range(50):
        net["a"].propose(b"p%d" % i)
    assert not net.queue, "proposals must not send on their own"
    rd = net.process_ready("a")
    assert rd is not None
    for follower in ("b", "c"):
        sent = appends(rd.messages, follower)
        assert len(sent) == 1
        assert [e.data for e in sent[0].entries] == [b"p%d" % i for i in range(50)]
    assert len(rd.entries) == 50 and rd.must_sync


def test_append_messages_are_capped_by_max_msg_bytes() -> None:
    net = Network(["a", "b", "c"], max_msg_bytes=250)
    net.elect("a")
    for _ in range(10):
        net["a"].propose(b"x" * 100)
    rd = net.process_ready("a")
    assert rd is not None
    sizes = [len(m.entries) for m in appends(rd.messages, "b")]
    assert sizes == [2, 2, 2, 2, 2]  # 200 bytes each; a third entry would exceed 250
    net.stabilize()
    assert len(net.applied_data("b")) == 10


def test_single_entry_larger_than_max_msg_bytes_still_goes() -> None:
    net = Network(["a", "b"], max_msg_bytes=10)
    net.elect("a")
    net["a"].propose(b"y" * 100)
    net.stabilize()
    assert net.applied_data("b") == [b"y" * 100]


def test_pipelining_stops_at_the_inflight_window_and_resumes_on_acks() -> None:
    net = Network(["a", "b"], max_msg_bytes=1, max_inflight_msgs=3)
    net.elect("a")
    for i in range(10):
        net["a"].propose(b"%d" % i)
    rd = net.process_ready("a")
    assert rd is not None
    assert len(appends(rd.messages, "b")) == 3, "window of 3 APPENDs in flight"
    progress = net["a"].progress("b")
    assert progress is not None and progress.state is ProgressState.REPLICATE
    assert progress.inflights.is_full()
    net.deliver()  # b gets 3 APPENDs
    net.process_ready("b")  # b acks all three
    net.deliver()  # each ack frees a slot that a refills at once
    rd = net.process_ready("a")
    assert rd is not None and len(appends(rd.messages, "b")) == 3
    net.stabilize()
    assert net.applied_data("b") == [b"%d" % i for i in range(10)]


def test_probing_follower_gets_one_append_at_a_time() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    for i in range(5):
        net["a"].propose(b"%d" % i)
        net.stabilize()
    net["a"].report_unreachable("c")
    progress = net["a"].progress("c")
    assert progress is not None and progress.state is ProgressState.PROBE
    net["a"].propose(b"more")
    rd = net.process_ready("a")
    assert rd is not None
    assert len(appends(rd.messages, "c")) == 1
    assert progress.probe_sent
    net["a"].propose(b"even more")
    rd = net.process_ready("a")
    assert rd is not None and not appends(rd.messages, "c"), "paused while probing"
    net.heal()
    net.tick(2)
    assert net.applied_data("c") == net.applied_data("a")


def test_heartbeat_commit_never_exceeds_follower_match() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    net["a"].propose(b"only-on-a-and-b")
    net.stabilize()
    net.heal()
    net["a"].tick()
    rd = net.process_ready("a")
    assert rd is not None
    beats = {m.to: m for m in rd.messages if m.type is MessageType.HEARTBEAT}
    progress_c = net["a"].progress("c")
    assert progress_c is not None
    assert beats["b"].commit == net["a"].commit_index
    assert beats["c"].commit == progress_c.match < net["a"].commit_index


def test_heartbeat_response_from_lagging_follower_triggers_entries() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    net["a"].propose(b"missed")
    net.stabilize()
    net.heal()
    net.tick(1)  # heartbeat → c answers → a sends what c lacks
    assert net.applied_data("c") == [b"missed"]


def test_leader_counts_its_own_entry_only_after_persisting_it() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    index, _ = net["a"].propose(b"v")
    rd = net["a"].ready()  # taken, not yet persisted / advanced
    net.queue.extend(rd.messages)
    net.deliver(only=lambda m: m.to == "b")
    net.process_ready("b")
    net.deliver(only=lambda m: m.to == "a")
    assert net["a"].commit_index < index, "a's unpersisted copy must not count"
    net.replicas["a"].storage.append(rd.entries)
    net["a"].advance(rd)
    assert net["a"].commit_index == index


def test_single_voter_commits_in_the_ready_that_persists_the_entry() -> None:
    """The only voter's own write is the quorum: one Ready carries the entry
    to persist, the same entry to apply and the new commit index, so the IO
    layer writes all three in one atomic batch (and needs no second Ready)."""
    net = Network(["a"])
    net.elect("a")
    index, _ = net["a"].propose(b"v")
    rd = net["a"].ready()
    assert [e.index for e in rd.entries] == [index]
    assert [e.index for e in rd.committed_entries] == [index]
    assert rd.hard_state is not None and rd.hard_state.commit == index
    assert rd.must_sync
    net.replicas["a"].storage.append(rd.entries)
    net["a"].advance(rd)
    assert net["a"].applied_index == index
    assert not net["a"].has_ready(), "nothing left: no second Ready, no commit broadcast"


def test_single_voter_with_a_learner_still_commits_alone_and_replicates() -> None:
    net = Network(["a"], learners=["b"])
    net.elect("a")
    index, _ = net["a"].propose(b"v")
    rd = net["a"].ready()
    assert [e.index for e in rd.committed_entries] == [index]  # b does not vote
    assert any(m.to == "b" and m.entries for m in rd.messages)


def test_a_leader_with_followers_commits_only_after_a_quorum_has_it() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    index, _ = net["a"].propose(b"v")
    rd = net["a"].ready()
    assert not rd.committed_entries and net["a"].commit_index < index


def test_follower_applies_entries_persisted_in_the_same_ready() -> None:
    net = Network(["a", "b"])
    net.elect("a")
    net["a"].propose(b"one")
    net.process_ready("a")
    net.deliver()
    net.process_ready("b")
    net.deliver()  # a commits on b's ack
    net.process_all()  # a broadcasts the commit
    net["a"].propose(b"two")
    net.process_ready("a")  # APPEND of "two" carries commit of "one"
    net.deliver()
    rd = net.process_ready("b")
    assert rd is not None
    assert [e.data for e in rd.entries] == [b"two"]
    assert [e.data for e in rd.committed_entries] == [b"one"]


def test_committed_entries_per_ready_are_capped() -> None:
    net = Network(["a"])
    net.elect("a")
    for _ in range(10):
        net["a"].propose(b"z" * (1 << 20))
    net.process_ready("a")
    rd = net.process_ready("a")
    assert rd is not None and 0 < len(rd.committed_entries) < 10
    net.stabilize()
    assert len(net.applied_data("a")) == 10


def test_proposal_on_follower_raises_not_leader_with_hint() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    with pytest.raises(NotLeader) as caught:
        net["b"].propose(b"x")
    assert caught.value.leader_hint == "a" and caught.value.group_id == GROUP_ID


def test_uncommitted_bytes_cap_drops_proposals_until_commit() -> None:
    net = Network(["a", "b", "c"], max_uncommitted_bytes=1000)
    net.elect("a")
    net.isolate("a")
    net["a"].propose(b"q" * 600)
    with pytest.raises(ProposalDropped):
        net["a"].propose(b"q" * 600)
    net.heal()
    net.stabilize()
    net["a"].propose(b"q" * 600)  # the first one committed and applied: room again


def test_hard_state_and_must_sync_for_votes() -> None:
    net = Network(["a", "b", "c"], pre_vote=False)
    net["a"].campaign()
    rd = net["a"].ready()
    assert rd.hard_state is not None
    assert rd.hard_state.term == 1 and rd.hard_state.vote == "a"
    assert rd.must_sync
    assert rd.soft_state is not None


def test_idle_follower_tick_allocates_nothing() -> None:
    """An idle group costs a counter increment per tick: no allocation at
    all (not even a temporary one), and no Ready."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    follower = net["b"]
    follower.tick()

    def idle_ticks() -> bool:
        # Unrolled: a loop would allocate its own iterator.
        follower.tick()
        follower.tick()
        follower.tick()
        return follower.has_ready()

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        has_ready = idle_ticks()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not has_ready
    assert peak - baseline == 0, f"{peak - baseline} bytes allocated by idle ticks"


def test_idle_tick_reports_work_only_when_it_sends_or_changes_role() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.stabilize()
    # heartbeat_interval_ticks is 1 in the harness: every leader tick sends.
    assert net["a"].tick() is True
    assert net["b"].tick() is False and not net["b"].has_ready()
    net.process_all()
    net.queue.clear()
    for _ in range(40):  # no leader heard from: b campaigns at some tick
        if net["b"].tick():
            break
    assert net["b"].has_ready() and net["b"].role is not Role.FOLLOWER


def test_heartbeat_answer_goes_out_without_a_ready_when_nothing_changed() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.stabilize()
    net["a"].tick()
    net.process_ready("a")
    beats = net.take(MessageType.HEARTBEAT)
    net["b"].step(next(m for m in beats if m.to == "b"))
    answer = net["b"].take_messages_if_only()
    assert answer is not None and [m.type for m in answer] == [MessageType.HEARTBEAT_RESP]
    assert not net["b"].has_ready() and net["b"].take_messages_if_only() is None


def test_heartbeat_that_moves_commit_needs_a_full_ready() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.stabilize()
    net["a"].propose(b"v")
    net.process_ready("a")
    net.deliver(only=lambda m: m.type is MessageType.APPEND)
    net.process_all()  # b and c persist and answer
    net.deliver(only=lambda m: m.type is MessageType.APPEND_RESP)
    net.process_ready("a")  # a commits
    net.take(MessageType.APPEND)  # the commit broadcast is lost
    net["a"].tick()
    net.process_ready("a")
    beat = next(m for m in net.take(MessageType.HEARTBEAT) if m.to == "b")
    assert beat.commit > net["b"].commit_index
    net["b"].step(beat)
    assert net["b"].take_messages_if_only() is None  # the commit must be applied
    rd = net.process_ready("b")
    assert rd is not None and [e.data for e in rd.committed_entries] == [b"v"]


def test_propose_many_appends_consecutive_entries_that_replicate_in_order() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    before = net["a"].last_index
    first, term = net["a"].propose_many([b"x", b"y", b"z"])
    assert (first, term) == (before + 1, net["a"].term)
    assert net["a"].last_index == before + 3
    net.stabilize()
    for node_id in "abc":
        assert net.applied_data(node_id)[-3:] == [b"x", b"y", b"z"]


def test_propose_many_is_all_or_none() -> None:
    net = Network(["a", "b", "c"], max_uncommitted_bytes=1000)
    net.elect("a")
    net["a"].propose(b"p" * 600)  # uncommitted: 600 bytes
    last = net["a"].last_index
    with pytest.raises(ProposalDropped):
        net["a"].propose_many([b"q" * 100, b"r" * 400])  # 600 + 500 > 1000
    assert net["a"].last_index == last
    net["a"].propose(b"q" * 100)  # one that fits still goes in
    assert net["a"].last_index == last + 1
    with pytest.raises(NotLeader):
        net["b"].propose_many([b"s"])


def test_heartbeats_keep_the_phase_of_the_tick_count_not_of_the_election() -> None:
    net = Network(["a", "b", "c"], heartbeat_interval_ticks=3)
    net["a"].tick()
    net["a"].tick()  # a has seen 2 ticks when it wins
    net.elect("a")
    net.queue.clear()
    beats_at = []
    for tick in range(3, 10):
        net["a"].tick()
        net.process_ready("a")
        if net.take(MessageType.HEARTBEAT):
            beats_at.append(tick)
    assert beats_at == [3, 6, 9]  # with every other leader of the host ticked alike


def test_an_accepted_commit_only_append_is_not_answered() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net["a"].propose(b"x")
    net.process_ready("a")
    net.deliver()  # the entry reaches b and c
    net.process_all()
    net.deliver()  # their acks commit it on a
    rd = net.process_ready("a")
    assert rd is not None
    commit_only = appends(rd.messages)
    assert len(commit_only) == 2
    assert all(m.context == COMMIT_ONLY and not m.entries for m in commit_only)
    net.deliver()
    for follower in ("b", "c"):
        rd = net.process_ready(follower)
        assert rd is not None and not rd.messages
        assert net.applied_data(follower) == [b"x"]
    assert not net.queue


def _deferred_notices_network() -> Network:
    """a leads b and c with ``prompt_commit_notice`` off, and the election's
    empty entry is committed and applied everywhere."""
    net = Network(["a", "b", "c"], prompt_commit_notice=False)
    net.elect("a")
    net.tick()  # a heartbeat round carries that entry's commit index
    net.stabilize()
    return net


def _replicate_and_acknowledge(net: Network) -> None:
    """a's pending proposals reach b and c, and their acks reach a, which
    has committed them; the Ready that follows is a's next one."""
    net.process_ready("a")
    net.deliver()
    net.process_all()
    net.deliver()


def test_without_prompt_notices_a_commit_rides_on_the_next_heartbeat() -> None:
    net = _deferred_notices_network()
    net["a"].propose(b"x")
    _replicate_and_acknowledge(net)
    rd = net.process_ready("a")
    assert rd is not None and net.applied_data("a") == [b"x"]
    assert not appends(rd.messages), "a commit alone sends nothing"
    net.stabilize()
    for follower in ("b", "c"):
        assert net[follower].commit_index < net["a"].commit_index
        assert net.applied_data(follower) == []
    net.tick()  # heartbeat interval 1: the beat carries the commit index
    for follower in ("b", "c"):
        assert net[follower].commit_index == net["a"].commit_index
        assert net.applied_data(follower) == [b"x"]


def test_without_prompt_notices_a_commit_rides_on_the_next_append() -> None:
    net = _deferred_notices_network()
    net["a"].propose(b"x")
    _replicate_and_acknowledge(net)
    net.process_ready("a")
    net.stabilize()
    assert net.applied_data("b") == net.applied_data("c") == []
    net["a"].propose(b"y")
    rd = net.process_ready("a")
    assert rd is not None
    sent = appends(rd.messages)
    assert len(sent) == 2 and all(m.commit == net["a"].commit_index for m in sent)
    net.deliver()
    net.process_all()
    for follower in ("b", "c"):
        assert net.applied_data(follower) == [b"x"]


def test_without_prompt_notices_a_membership_change_is_still_announced_at_once() -> None:
    net = _deferred_notices_network()
    net["a"].propose_conf_change(ConfChange(op=ConfChangeOp.REMOVE, node_id="c"))
    _replicate_and_acknowledge(net)
    rd = net.process_ready("a")
    assert rd is not None
    notices = appends(rd.messages)
    assert {m.to for m in notices} == {"b", "c"}
    assert all(m.context == COMMIT_ONLY and not m.entries for m in notices)
    net.deliver()
    net.process_all()
    assert "c" not in net["c"].conf_state.voters  # c learned it was removed


def test_a_commit_only_append_that_does_not_match_is_answered_and_repaired() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.filter = lambda m: m.to == "c" and m.type is MessageType.APPEND and bool(m.entries)
    net["a"].propose(b"x")
    net.stabilize()  # committed with b; c got only the commit-only APPEND
    net.filter = None
    net.tick()  # heartbeat round (interval 1): c is found behind and caught up
    assert net.applied_data("c") == [b"x"]


def test_a_lost_acknowledgement_is_repaired_by_the_heartbeat_round() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.filter = lambda m: m.sender == "b" and m.type is MessageType.APPEND_RESP
    net["a"].propose(b"x")
    net.stabilize()  # committed with c; b holds x but its ack was lost
    net.filter = None
    progress = net["a"].progress("b")
    assert progress is not None and progress.match < net["a"].last_index
    net.tick()  # a heartbeat round: b's answer shows it behind, an answered APPEND follows
    assert progress.match == net["a"].last_index


def test_a_replica_re_created_empty_is_caught_up_again() -> None:
    """Found by simulator seed 100865: d's replica was deleted and created
    again empty while the leader still held the match its old incarnation
    acknowledged. The leader probed the index after that match for ever and
    ignored every rejection as stale; d never received anything again."""
    net = Network(["a", "b", "c"])
    net.add_node("d", conf=ConfState(voters=("a", "b", "c")))
    net.elect("a")
    net["a"].propose_conf_change(ConfChange(op=ConfChangeOp.ADD_LEARNER, node_id="d"))
    for n in range(5):
        net["a"].propose(b"before %d" % n)
    net.stabilize()
    progress = net["a"].progress("d")
    assert progress is not None and progress.match == net["a"].last_index
    net.add_node("d", conf=ConfState(voters=("a", "b", "c")))  # re-created empty
    net["a"].propose(b"after")
    net.stabilize()
    assert net["d"].last_index == net["a"].last_index
    assert net.applied_data("d")[-1] == b"after"
