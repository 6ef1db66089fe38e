"""Snapshots: compacted logs, InstallSnapshot, follower install, restart."""

from __future__ import annotations

import random
from dataclasses import replace

from fastpaca.raft.core import RaftConfig, RaftNode
from fastpaca.raft.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    SnapshotMeta,
)
from fastpaca.raft.progress import ProgressState
from fastpaca.raft.ready import Role
from fastpaca.raft.storage import MemoryStorage
from tests.raft.harness import GROUP_ID, Network


def lagging_cluster(writes: int = 10, *, heal: bool = True) -> Network:
    """a leads, c missed ``writes`` entries, a compacted them away."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    for i in range(writes):
        net["a"].propose(b"w%d" % i)
    net.stabilize()
    net.compact("a", net["a"].applied_index)
    if heal:
        net.heal()
    return net


def progress_state(net: Network, node_id: str) -> ProgressState:
    progress = net["a"].progress(node_id)
    assert progress is not None
    return progress.state


def test_follower_behind_compacted_log_installs_snapshot_and_keeps_replicating() -> None:
    net = lagging_cluster()
    snapshot_index = net["a"].applied_index
    assert net["a"].first_index == snapshot_index + 1
    # heartbeat → c answers → empty APPEND → c rejects → a probes below its
    # first index and finds it compacted → SNAPSHOT.
    net["a"].tick()
    snapshots: list[Message] = []
    for _ in range(6):
        net.process_all()
        snapshots = [m for m in net.queue if m.type is MessageType.SNAPSHOT]
        if snapshots:
            break
        net.deliver()
    assert [m.to for m in snapshots] == ["c"]
    assert snapshots[0].snapshot is not None and snapshots[0].snapshot.index == snapshot_index
    assert progress_state(net, "c") is ProgressState.SNAPSHOT
    net.deliver()
    rd = net.process_ready("c")
    assert rd is not None and rd.snapshot is not None and rd.must_sync
    assert rd.snapshot.index == snapshot_index
    assert net["c"].commit_index == net["c"].applied_index == snapshot_index
    net.stabilize()
    assert progress_state(net, "c") is ProgressState.REPLICATE
    progress = net["a"].progress("c")
    assert progress is not None and progress.match == snapshot_index
    net["a"].propose(b"after-snapshot")
    net.stabilize()
    assert net.applied_data("c") == net.applied_data("a")
    assert net.applied_data("c")[-1] == b"after-snapshot"


def test_leader_leaves_snapshot_state_on_a_newer_snapshot_than_its_own() -> None:
    net = lagging_cluster(heal=False)
    net["a"].propose(b"x")
    net.stabilize()
    net.heal()
    newest = net["a"].applied_index
    net.snapshots[newest] = list(net.replicas["a"].applied)

    substituted: list[int] = []

    def substitute(msg: Message) -> Message:
        # The IO layer sends the state machine's current state instead.
        if msg.snapshot is None:
            return msg
        substituted.append(msg.snapshot.index)
        return replace(msg, snapshot=replace(msg.snapshot, index=newest, term=net["a"].term))

    net.rewrite = substitute
    net.tick(2)
    assert substituted and substituted[0] < newest
    progress = net["a"].progress("c")
    assert progress is not None and progress.state is ProgressState.REPLICATE
    assert progress.match == net["a"].last_index
    assert net.applied_data("c") == net.applied_data("a")


def test_failed_snapshot_report_sends_progress_back_to_probe_and_retries() -> None:
    net = lagging_cluster()
    net.filter = lambda m: m.type is MessageType.SNAPSHOT  # lost in transit
    net["a"].tick()
    net.stabilize()
    assert progress_state(net, "c") is ProgressState.SNAPSHOT
    net["a"].report_snapshot("c", False)
    assert progress_state(net, "c") is ProgressState.PROBE
    net.heal()
    net.tick(3)
    assert net.applied_data("c") == net.applied_data("a")


def snapshot_message(to_node: RaftNode, meta: SnapshotMeta, term: int) -> Message:
    return Message(
        type=MessageType.SNAPSHOT,
        group_id=GROUP_ID,
        sender="a",
        to=to_node.node_id,
        term=term,
        snapshot=meta,
    )


def follower_with_log(terms: list[int], commit: int) -> RaftNode:
    storage = MemoryStorage(conf_state=ConfState(voters=("a", "b")))
    storage.append([Entry(index=i, term=t) for i, t in enumerate(terms, 1)])
    storage.set_hard_state(HardState(term=max(terms), commit=commit))
    return RaftNode(RaftConfig(node_id="b", group_id=GROUP_ID), storage, random.Random(1))


def test_follower_ignores_snapshot_at_or_below_its_commit() -> None:
    node = follower_with_log([1, 1, 1], commit=3)
    conf = ConfState(voters=("a", "b"))
    node.step(snapshot_message(node, SnapshotMeta(index=2, term=1, conf_state=conf), term=1))
    rd = node.ready()
    assert rd.snapshot is None
    assert [(m.type, m.index, m.reject) for m in rd.messages] == [
        (MessageType.APPEND_RESP, 3, False)
    ]


def test_follower_holding_the_snapshot_entry_only_fast_forwards_commit() -> None:
    node = follower_with_log([1, 1, 1, 1], commit=1)
    conf = ConfState(voters=("a", "b"))
    node.step(snapshot_message(node, SnapshotMeta(index=3, term=1, conf_state=conf), term=1))
    rd = node.ready()
    assert rd.snapshot is None
    assert node.commit_index == 3 and node.last_index == 4, "log kept, commit moved"
    assert rd.messages[-1].index == 3


def test_follower_with_conflicting_log_resets_to_snapshot() -> None:
    node = follower_with_log([1, 1, 2, 2], commit=1)
    conf = ConfState(voters=("a", "b"), learners=("c",))
    node.step(snapshot_message(node, SnapshotMeta(index=3, term=3, conf_state=conf), term=3))
    rd = node.ready()
    assert rd.snapshot is not None and rd.snapshot.index == 3 and rd.must_sync
    assert node.last_index == 3 and node.commit_index == 3
    assert node.conf_state == conf
    assert rd.messages[-1].index == 3 and not rd.messages[-1].reject


def test_snapshot_predating_our_membership_is_installed() -> None:
    """The snapshot may be older than the change that added us; the entries
    after it replay that change."""
    node = follower_with_log([1], commit=1)
    meta = SnapshotMeta(index=5, term=1, conf_state=ConfState(voters=("a", "z")))
    node.step(snapshot_message(node, meta, term=1))
    assert node.ready().snapshot == meta
    assert node.conf_state == ConfState(voters=("a", "z"))
    for _ in range(50):
        node.tick()
    assert node.role is Role.FOLLOWER, "not a voter in the installed membership"


def test_learner_added_after_compaction_catches_up_from_an_older_snapshot() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    for i in range(5):
        net["a"].propose(b"w%d" % i)
    net.stabilize()
    net.compact("a", net["a"].applied_index)  # membership {a, b, c} in the snapshot
    net.add_node("d")  # joins knowing nothing, as a fresh replica does
    net["a"].propose_conf_change(ConfChange(op=ConfChangeOp.ADD_LEARNER, node_id="d"))
    net.stabilize()
    net.tick(3)
    net["a"].propose(b"after")
    net.stabilize()
    assert net.replicas["d"].storage.snapshot_meta().conf_state == ConfState(voters=("a", "b", "c"))
    assert net.applied_data("d") == net.applied_data("a")
    assert net["d"].conf_state == ConfState(voters=("a", "b", "c"), learners=("d",))


def test_restart_from_snapshot_resumes_after_it() -> None:
    net = lagging_cluster()
    net.stabilize()
    restarted = net.restart("a")
    assert restarted.applied_index >= restarted.first_index - 1
    assert restarted.commit_index >= restarted.first_index - 1
    net.tick(40)
    leader = net.leader()
    leader.propose(b"again")
    net.stabilize()
    assert net.applied_data("a")[-1] == b"again"


def test_compaction_under_an_inflight_follower_falls_back_to_snapshot() -> None:
    net = Network(["a", "b", "c"], max_inflight_msgs=2, max_msg_bytes=1)
    net.elect("a")
    net.filter = lambda m: m.to == "c"
    for i in range(6):
        net["a"].propose(b"%d" % i)
    net.stabilize()
    net.compact("a", net["a"].applied_index)
    net.heal()
    net.tick(4)
    assert net.applied_data("c") == net.applied_data("a")


def test_restart_with_stored_commit_behind_applied_index() -> None:
    """Commit-only hard state changes are not synced: after a crash the stored
    commit may trail the state machine; applied entries count as committed."""
    storage = MemoryStorage(conf_state=ConfState(voters=("a", "b")))
    storage.append([Entry(index=i, term=1) for i in range(1, 6)])
    storage.set_hard_state(HardState(term=1, commit=2))
    node = RaftNode(
        RaftConfig(node_id="a", group_id=GROUP_ID, applied_index=4), storage, random.Random(1)
    )
    assert node.commit_index == 4 and node.applied_index == 4
    assert not node.has_ready() or not node.ready().committed_entries
