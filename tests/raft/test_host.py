"""NodeHost driven by hand: real LevelDB in temp dirs, frames passed between
hosts by the test, so every interleaving is deterministic."""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastpaca.errors import InvariantViolation, NotLeader
from fastpaca.raft.codec import (
    CodecError,
    SnapshotChunk,
    SnapshotStatus,
    decode_frame,
    encode_frame,
)
from fastpaca.raft.core import RaftConfig
from fastpaca.raft.host import HostConfig, IterationResult, NodeHost
from fastpaca.raft.kv import LevelDBKV
from fastpaca.raft.leveldb import LevelDBStorage
from fastpaca.raft.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Message,
    MessageType,
    SnapshotMeta,
)
from fastpaca.raft.testing import KVStateMachine, put_command

NAMES = ("n1", "n2", "n3")


class Cluster:
    """Hosts that exchange frames through per-node inboxes; ``cut`` nodes
    neither send nor receive."""

    def __init__(
        self,
        root: Path,
        names: tuple[str, ...],
        config: HostConfig | None = None,
        *,
        early_sends: bool = True,
    ):
        self.root = root
        self.early_sends = early_sends
        self.config = config or HostConfig()
        self.kvs: dict[str, LevelDBKV] = {}
        self.hosts: dict[str, NodeHost] = {}
        self.sms: dict[str, KVStateMachine] = {}
        self.inbox: dict[str, list[tuple[str, bytes]]] = {n: [] for n in names}
        self.cut: set[str] = set()
        self.results: dict[str, list[IterationResult]] = {n: [] for n in names}
        self.frames_per_iteration: list[dict[str, bytes]] = []
        for name in names:
            self.start(name)

    def start(self, name: str) -> NodeHost:
        kv = LevelDBKV(str(self.root / name))
        sm = KVStateMachine(kv)
        template = RaftConfig(node_id=name, group_id=0, election_timeout_ticks=10)
        host = NodeHost(name, kv, sm, template, random.Random(name), self.config)
        host.open_groups()
        self.kvs[name], self.sms[name], self.hosts[name] = kv, sm, host
        return host

    def stop(self, name: str) -> None:
        self.kvs.pop(name).close()
        del self.hosts[name]
        self.inbox[name].clear()

    def close(self) -> None:
        for kv in self.kvs.values():
            kv.close()

    def iterate(self, name: str) -> None:
        host = self.hosts[name]
        for peer, frame in self.inbox[name]:
            host.receive(peer, frame)
        self.inbox[name].clear()
        if not host.has_work():
            return
        iteration = host.prepare()
        if self.early_sends:
            self.deliver(name, iteration.take_early_frames())
        iteration.write()
        frames = iteration.frames()
        self.frames_per_iteration.append(frames)
        self.deliver(name, frames)
        self.results[name].append(host.finish(iteration))

    def iterate_inbox_only(self, name: str) -> None:
        for peer, frame in self.inbox[name]:
            self.hosts[name].receive(peer, frame)
        self.inbox[name].clear()

    def deliver(self, name: str, frames: dict[str, bytes]) -> None:
        for peer, frame in frames.items():
            if name not in self.cut and peer not in self.cut and peer in self.hosts:
                self.inbox[peer].append((name, frame))

    def round(self, *, tick: bool = False) -> None:
        for name in sorted(self.hosts):
            if tick:
                self.hosts[name].tick()
            self.iterate(name)

    def settle(self, rounds: int = 30) -> None:
        for _ in range(rounds):
            self.round()

    def elect(self, group_id: int, rounds: int = 100) -> str:
        for _ in range(rounds):
            self.round(tick=True)
            leaders = [n for n, h in self.hosts.items() if h.is_leader(group_id)]
            if leaders and n_not_cut(leaders, self.cut):
                self.settle(5)
                return n_not_cut(leaders, self.cut)[0]
        raise AssertionError(f"no leader for group {group_id}")

    def applied(self, name: str, group_id: int) -> list[object]:
        return [
            result
            for it in self.results[name]
            for batch in it.applied
            if batch.group_id == group_id
            for result in batch.results
        ]


def n_not_cut(names: list[str], cut: set[str]) -> list[str]:
    return [n for n in names if n not in cut]


@pytest.fixture(params=[True, False], ids=["early-appends", "all-after-write"])
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(tmp_path, NAMES, early_sends=request.param)
    yield c
    c.close()


def test_single_voter_group_elects_itself_applies_and_restarts(tmp_path: Path) -> None:
    solo = Cluster(tmp_path, ("n1",))
    host = solo.hosts["n1"]
    host.ensure_group(5, ["n1"])
    solo.settle(3)
    assert host.is_leader(5)
    index, term = host.propose(5, put_command(b"k", b"v1"))
    host.propose(5, put_command(b"k", b"v2"))
    solo.settle(3)
    assert solo.sms["n1"].get(5, b"k") == b"v2"
    results = solo.applied("n1", 5)
    assert results[-2:] == [None, b"v1"]  # put returns the previous value
    applied_before = solo.sms["n1"].applied_index(5)
    solo.stop("n1")

    host = solo.start("n1")
    assert host.group_ids() == [5]
    assert host.core(5).applied_index == applied_before  # nothing replayed
    solo.settle(3)
    assert host.is_leader(5)
    assert host.core(5).term > term
    assert solo.sms["n1"].get(5, b"k") == b"v2"
    # Its entries were never stored: each was applied by the write that
    # would have stored it, which moved the log's base past it instead.
    entry_keys = b"r\x00\x05e"
    assert list(solo.kvs["n1"].iterate(entry_keys, entry_keys + b"\xff")) == []
    assert LevelDBStorage.open(solo.kvs["n1"], 5).snapshot_meta().index >= index
    solo.close()


def test_three_hosts_replicate_many_groups_in_one_frame_per_peer(cluster: Cluster) -> None:
    groups = range(8)
    for host in cluster.hosts.values():
        for group_id in groups:
            host.ensure_group(group_id, NAMES)
    leaders = {g: cluster.elect(g) for g in groups}
    for g, leader in leaders.items():
        cluster.hosts[leader].propose(g, put_command(b"key", f"value-{g}".encode()))
    cluster.settle(10)
    for name in NAMES:
        for g in groups:
            assert cluster.sms[name].get(g, b"key") == f"value-{g}".encode()
    # One frame per peer per iteration, heartbeats of all groups coalesced.
    cluster.frames_per_iteration.clear()
    for _ in range(3):
        cluster.round(tick=True)
    for frames in cluster.frames_per_iteration:
        for frame in frames.values():
            decoded = decode_frame(frame)
            heartbeats = [m for m in decoded.messages if m.type is MessageType.HEARTBEAT]
            assert len({m.group_id for m in heartbeats}) == len(heartbeats)


def test_frames_and_finish_refuse_to_run_before_the_write(cluster: Cluster) -> None:
    host = cluster.hosts["n1"]
    host.ensure_group(1, NAMES)
    iteration = host.prepare()
    assert iteration.must_sync  # the bootstrap is written synced
    with pytest.raises(InvariantViolation):
        iteration.frames()
    with pytest.raises(InvariantViolation):
        host.finish(iteration)
    with pytest.raises(InvariantViolation):
        host.propose(1, b"x")  # not re-entrant while an iteration is open
    iteration.write()
    host.finish(iteration)
    assert host.group_ids() == [1]


def test_bad_input_is_dropped_counted_or_refused(cluster: Cluster) -> None:
    host = cluster.hosts["n1"]
    for each in cluster.hosts.values():
        each.ensure_group(1, NAMES)
    cluster.elect(1)
    stray = Message(type=MessageType.HEARTBEAT, group_id=99, sender="n2", to="n1", term=5)
    host.receive("n2", encode_frame("n2", "n1", [stray]))
    assert host.stats.dropped_unknown_group == 1
    elsewhere = Message(type=MessageType.HEARTBEAT, group_id=1, sender="n2", to="n3", term=5)
    host.receive("n2", encode_frame("n2", "n3", [elsewhere]))
    assert host.stats.dropped_misaddressed == 1
    with pytest.raises(CodecError, match="claims"):
        host.receive("n3", encode_frame("n2", "n1", []))
    with pytest.raises(CodecError):
        host.receive("n2", b"\x01garbage")
    # Old term: the core drops and counts it.
    before = host.dropped_by_cores
    old = Message(type=MessageType.APPEND_RESP, group_id=1, sender="n2", to="n1", term=0)
    host.receive("n2", encode_frame("n2", "n1", [old]))
    assert host.dropped_by_cores == before + 1


def test_not_leader_names_the_leader(cluster: Cluster) -> None:
    for host in cluster.hosts.values():
        host.ensure_group(3, NAMES)
    leader = cluster.elect(3)
    follower = next(n for n in NAMES if n != leader)
    with pytest.raises(NotLeader) as caught:
        cluster.hosts[follower].propose(3, b"x")
    assert caught.value.leader_hint == leader
    with pytest.raises(NotLeader):
        cluster.hosts[leader].propose(77, b"x")  # a group this node does not host


def test_lagging_follower_catches_up_by_chunked_snapshot(tmp_path: Path) -> None:
    config = HostConfig(
        snapshot_chunk_bytes=64, compact_threshold_entries=20, compact_keep_entries=5
    )
    cluster = Cluster(tmp_path, NAMES, config)
    try:
        for host in cluster.hosts.values():
            host.ensure_group(2, NAMES)
        leader = cluster.elect(2)
        lagger = next(n for n in NAMES if n != leader)
        cluster.cut.add(lagger)
        for i in range(60):
            cluster.hosts[leader].propose(2, put_command(f"k{i:02d}".encode(), b"v" * 20))
            cluster.round(tick=i % 5 == 0)
        cluster.settle(5)
        leader_storage = LevelDBStorage.open(cluster.kvs[leader], 2)
        assert leader_storage.first_index() > 10  # compacted past what the lagger has
        cluster.cut.clear()
        for _ in range(200):
            cluster.round(tick=True)
            if cluster.sms[lagger].items(2) == cluster.sms[leader].items(2):
                break
        assert cluster.sms[lagger].items(2) == cluster.sms[leader].items(2)
        assert len(cluster.sms[lagger].items(2)) == 60
        lag_host = cluster.hosts[lagger]
        assert lag_host.stats.snapshots_installed == 1
        assert cluster.hosts[leader].stats.snapshots_sent >= 1
        # The staged chunks are gone and the log restarts after the snapshot.
        prefix = b"r\x00\x02x"
        assert list(cluster.kvs[lagger].iterate(prefix, prefix + b"\xff")) == []
        assert lag_host.core(2).conf_state == ConfState(voters=NAMES)
        # It keeps replicating normally afterwards.
        cluster.hosts[leader].propose(2, put_command(b"after", b"snap"))
        cluster.settle(5)
        assert cluster.sms[lagger].get(2, b"after") == b"snap"
    finally:
        cluster.close()


def test_follower_restarts_with_one_entry_after_an_installed_snapshot(tmp_path: Path) -> None:
    # The cluster soak's crash, step by step: a lagging follower installs a
    # snapshot (its log is now empty above the base), appends, commits and
    # applies exactly one entry, and is killed. Every write completed, so the
    # restart must rebuild base + that one entry, neither refuse the group
    # (it did: "commit beyond last index") nor lose or re-apply the entry.
    config = HostConfig(compact_threshold_entries=20, compact_keep_entries=5)
    cluster = Cluster(tmp_path, NAMES, config)
    try:
        for host in cluster.hosts.values():
            host.ensure_group(3, NAMES)
        leader = cluster.elect(3)
        lagger = next(n for n in NAMES if n != leader)
        cluster.cut.add(lagger)
        for i in range(40):
            cluster.hosts[leader].propose(3, put_command(f"k{i:02d}".encode(), b"v"))
            cluster.round(tick=i % 5 == 0)
        cluster.settle(5)
        cluster.cut.clear()
        for _ in range(100):
            cluster.round(tick=True)
            if cluster.hosts[lagger].stats.snapshots_installed:
                break
        cluster.settle(5)
        base = LevelDBStorage.open(cluster.kvs[lagger], 3).snapshot_meta().index
        cluster.hosts[leader].propose(3, put_command(b"one", b"entry"))
        cluster.settle(5)
        # The shape on disk (read forward, key by key): base, one entry.
        entries = b"r\x00\x03e"
        stored = [key[4:] for key, _ in cluster.kvs[lagger].iterate(entries, entries + b"\xff")]
        assert base > 0 and stored == [struct.pack(">Q", base + 1)]
        assert cluster.sms[lagger].applied_index(3) == base + 1
        cluster.stop(lagger)
        restarted = cluster.start(lagger)
        assert restarted.core(3).applied_index == base + 1
        assert cluster.sms[lagger].get(3, b"one") == b"entry"
        cluster.hosts[leader].propose(3, put_command(b"after", b"restart"))
        cluster.settle(10)
        assert cluster.sms[lagger].items(3) == cluster.sms[leader].items(3)
        assert cluster.sms[lagger].applied_index(3) == base + 2
    finally:
        cluster.close()


def test_idle_groups_produce_no_work_without_ticks(cluster: Cluster) -> None:
    for host in cluster.hosts.values():
        for group_id in range(50):
            host.ensure_group(group_id, NAMES)
    for group_id in range(50):
        cluster.elect(group_id)
    cluster.settle(10)
    assert not any(host.has_work() for host in cluster.hosts.values())
    leader = next(n for n in NAMES if cluster.hosts[n].is_leader(7))
    cluster.hosts[leader].propose(7, b"")
    iteration = cluster.hosts[leader].prepare()
    assert [p.group_id for p in iteration.readies] == [7]  # only the busy group
    iteration.write()
    cluster.hosts[leader].finish(iteration)


def test_removed_group_leaves_no_keys(cluster: Cluster) -> None:
    host = cluster.hosts["n1"]
    host.ensure_group(4, ["n1"])
    cluster.settle(3)
    host.propose(4, put_command(b"a", b"b"))
    cluster.settle(3)
    host.remove_group(4)
    cluster.settle(1)
    kv = cluster.kvs["n1"]
    assert list(kv.iterate(b"r\x00\x04", b"r\x00\x05")) == []
    assert list(kv.iterate(b"s\x00\x04", b"s\x00\x05")) == []
    assert host.group_ids() == []
    # Hosting it again starts from nothing, once the removal is written.
    host.remove_group(4)
    with pytest.raises(InvariantViolation, match="being removed"):
        host.ensure_group(4, ["n1"])
    cluster.settle(1)
    host.ensure_group(4, ["n1"])
    cluster.settle(3)
    assert host.is_leader(4)
    assert cluster.sms["n1"].get(4, b"a") is None


def test_all_groups_rebuild_from_disk_after_every_node_restarts(cluster: Cluster) -> None:
    for host in cluster.hosts.values():
        for group_id in (1, 2, 3):
            host.ensure_group(group_id, NAMES)
    for group_id in (1, 2, 3):
        leader = cluster.elect(group_id)
        cluster.hosts[leader].propose(group_id, put_command(b"g", b"%d" % group_id))
    cluster.settle(10)
    commits = {g: cluster.hosts["n1"].core(g).commit_index for g in (1, 2, 3)}
    for name in NAMES:
        cluster.stop(name)
    for name in NAMES:
        cluster.start(name)
    for name in NAMES:
        host = cluster.hosts[name]
        assert host.group_ids() == [1, 2, 3]
        for group_id in (1, 2, 3):
            assert host.core(group_id).commit_index >= commits[group_id]
            assert cluster.sms[name].get(group_id, b"g") == b"%d" % group_id
    leader = cluster.elect(2)
    cluster.hosts[leader].propose(2, put_command(b"g", b"again"))
    cluster.settle(5)
    assert all(cluster.sms[n].get(2, b"g") == b"again" for n in NAMES)


def test_snapshot_with_a_bad_chunk_never_reaches_the_core(cluster: Cluster) -> None:
    for host in cluster.hosts.values():
        host.ensure_group(1, NAMES)
    leader = cluster.elect(1)
    follower = next(n for n in NAMES if n != leader)
    host = cluster.hosts[follower]
    term = host.core(1).term
    meta = SnapshotMeta(index=500, term=term, conf_state=ConfState(voters=NAMES))
    bogus = SnapshotChunk(
        group_id=1, term=term, snapshot_index=500, seq=0, is_last=True, data=b"\x00\x05ab"
    )
    snapshot = Message(
        type=MessageType.SNAPSHOT, group_id=1, sender=leader, to=follower, term=term, snapshot=meta
    )
    host.receive(leader, encode_frame(leader, follower, [snapshot], [bogus]))
    assert host.stats.snapshot_failures == 1
    assert host.core(1).commit_index < 500  # the core never saw it
    iteration = host.prepare()
    iteration.write()
    status = decode_frame(iteration.frames()[leader]).statuses
    host.finish(iteration)
    assert status == [SnapshotStatus(group_id=1, snapshot_index=500, success=False)]
    # A SNAPSHOT message without its chunks is dropped the same way.
    host.receive(leader, encode_frame(leader, follower, [snapshot]))
    assert host.stats.dropped_snapshots == 1
    assert host.core(1).commit_index < 500


def test_only_leader_traffic_of_a_durable_term_leaves_before_the_write(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, NAMES)
    try:
        for host in cluster.hosts.values():
            host.ensure_group(1, NAMES)
        leader = cluster.elect(1)
        durable_term = LevelDBStorage.open(cluster.kvs[leader], 1).hard_state.term
        cluster.hosts[leader].propose(1, put_command(b"k", b"v"))
        iteration = cluster.hosts[leader].prepare()
        early = iteration.take_early_frames()
        assert sorted(early) == sorted(n for n in NAMES if n != leader)
        for frame in early.values():
            for msg in decode_frame(frame).messages:
                assert msg.type in (MessageType.APPEND, MessageType.HEARTBEAT)
                assert msg.term == durable_term
            cluster.inbox[decode_frame(frame).to].append((leader, frame))
        assert iteration.take_early_frames() == {}  # handed out once
        iteration.write()
        assert all(not decode_frame(f).messages for f in iteration.frames().values())
        cluster.hosts[leader].finish(iteration)
        # Followers answer (APPEND_RESP): never before their own write.
        follower = next(n for n in NAMES if n != leader)
        cluster.iterate_inbox_only(follower)
        iteration = cluster.hosts[follower].prepare()
        assert iteration.take_early_frames() == {}
        iteration.write()
        assert any(decode_frame(f).messages for f in iteration.frames().values())
        cluster.hosts[follower].finish(iteration)
        # A candidate's first Ready changes its term: nothing goes early.
        cluster.hosts[follower].campaign(1)
        iteration = cluster.hosts[follower].prepare()
        assert iteration.take_early_frames() == {}
        iteration.write()
        cluster.hosts[follower].finish(iteration)
    finally:
        cluster.close()


def _one_pass(host: NodeHost) -> tuple[bool, IterationResult]:
    """prepare → write → finish; whether the write was fsync'd, the result."""
    iteration = host.prepare()
    iteration.write()
    iteration.frames()
    return iteration.must_sync, host.finish(iteration)


def test_single_voter_entry_commits_and_applies_in_the_write_that_persists_it(
    tmp_path: Path,
) -> None:
    solo = Cluster(tmp_path, ("n1",))
    host, sm = solo.hosts["n1"], solo.sms["n1"]
    host.ensure_group(5, ["n1"])
    solo.settle(3)
    while host.has_work():  # the new leader's empty entry
        _one_pass(host)
    index, _ = host.propose(5, put_command(b"k", b"v1"))

    synced, result = _one_pass(host)
    assert synced
    assert [e.index for batch in result.applied for e in batch.entries] == [index]
    assert host.core(5).commit_index == index
    assert sm.get(5, b"k") == b"v1" and sm.applied_index(5) == index
    assert not host.has_apply_due() and not host.core(5).has_ready()
    solo.close()


def test_single_voter_crash_before_the_write_keeps_neither_the_entry_nor_its_apply(
    tmp_path: Path,
) -> None:
    solo = Cluster(tmp_path, ("n1",))
    host = solo.hosts["n1"]
    host.ensure_group(5, ["n1"])
    solo.settle(3)
    while host.has_work():
        _one_pass(host)
    index, term = host.propose(5, put_command(b"k", b"v1"))
    host.prepare()  # entry, its apply and the commit index staged in one batch...
    solo.stop("n1")  # ... that is never written

    host = solo.start("n1")  # (it campaigns at once: a new term's empty entry may follow)
    assert host.core(5).log_term(index) != term
    assert host.core(5).commit_index == index - 1
    assert solo.sms["n1"].get(5, b"k") is None
    assert solo.sms["n1"].applied_index(5) == index - 1
    solo.close()


def test_compaction_deletes_at_most_one_chunk_per_write_until_it_reaches_its_target(
    tmp_path: Path,
) -> None:
    config = HostConfig(
        compact_threshold_entries=20, compact_keep_entries=5, compact_chunk_entries=4
    )
    # Three members: a lone voter stores no entries at all (``stage_fold``).
    trio = Cluster(tmp_path, NAMES, config)
    for host in trio.hosts.values():
        host.ensure_group(6, NAMES)
    leader = trio.elect(6)
    host, kv = trio.hosts[leader], trio.kvs[leader]
    firsts = [LevelDBStorage.open(kv, 6).first_index()]
    for i in range(40):  # one entry per round, committed and applied in it
        host.propose(6, put_command(f"k{i:02d}".encode(), b"v"))
        trio.settle(1)
        firsts.append(LevelDBStorage.open(kv, 6).first_index())
    trio.settle(3)
    applied = trio.sms[leader].applied_index(6)
    steps = [after - before for before, after in itertools.pairwise(firsts)]
    assert max(steps) == 4  # never more than one chunk per write
    # The first compaction crossed the threshold and went down, chunk by
    # chunk, to keep=5 entries below the index applied at that moment.
    first_compaction = next(n for n, step in enumerate(steps) if step)
    assert steps[first_compaction : first_compaction + 4] == [4, 4, 4, 4]
    # Everything stays within the threshold plus one chunk, and the log is
    # readable from its new first index on.
    storage = LevelDBStorage.open(kv, 6)
    assert applied - storage.first_index() + 1 <= 20 + 4
    assert storage.first_index() > 1
    assert trio.sms[leader].get(6, b"k39") == b"v"
    trio.stop(leader)
    restarted = trio.start(leader)
    assert restarted.core(6).applied_index == applied
    trio.close()


def _entry_indexes(kv: LevelDBKV, group_id: int) -> list[int]:
    prefix = b"r" + struct.pack(">H", group_id) + b"e"
    return [struct.unpack(">Q", key[4:])[0] for key, _ in kv.iterate(prefix, prefix + b"\xff")]


def test_a_lone_voter_stores_no_entries_until_a_learner_joins(tmp_path: Path) -> None:
    pair = Cluster(tmp_path, ("n1", "n2"))
    n1, n2 = pair.hosts["n1"], pair.hosts["n2"]
    n1.ensure_group(7, ["n1"])
    pair.settle(3)
    for i in range(10):
        n1.propose(7, put_command(f"a{i}".encode(), b"alone"))
        pair.settle(1)
    applied = pair.sms["n1"].applied_index(7)
    # The bootstrap's membership entry was stored, then compacted away; the
    # appends were folded into the base as they were applied.
    assert _entry_indexes(pair.kvs["n1"], 7) == []
    base = LevelDBStorage.open(pair.kvs["n1"], 7).snapshot_meta()
    assert base.index == applied and base.term == n1.core(7).term
    assert base.conf_state == ConfState(voters=("n1",))

    # A learner joins: it catches up from a snapshot (the log has nothing
    # to send), and from then on the leader stores its entries.
    n2.ensure_group(7, [])
    n1.propose_conf_change(7, ConfChange(op=ConfChangeOp.ADD_LEARNER, node_id="n2"))
    for _ in range(60):
        pair.round(tick=True)
        if pair.sms["n2"].items(7) == pair.sms["n1"].items(7):
            break
    assert pair.sms["n2"].items(7) == pair.sms["n1"].items(7)
    assert n2.stats.snapshots_installed == 1
    n1.propose(7, put_command(b"b", b"shared"))
    for _ in range(30):  # after the install the leader probes n2 again on a beat
        pair.round(tick=True)
        if pair.sms["n2"].get(7, b"b") is not None:
            break
    assert pair.sms["n2"].get(7, b"b") == b"shared"
    last = n1.core(7).last_index
    assert last in _entry_indexes(pair.kvs["n1"], 7)
    assert last in _entry_indexes(pair.kvs["n2"], 7)

    # Restarted, the lone node's base and state are intact.
    pair.stop("n1")
    restarted = pair.start("n1")
    assert restarted.core(7).applied_index >= applied + 1
    assert pair.sms["n1"].get(7, b"a9") == b"alone"
    pair.close()
