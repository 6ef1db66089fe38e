"""RaftDriver end to end: real LevelDB in temp dirs, drivers connected by the
in-memory transport in one event loop, small ticks so elections take ~100 ms."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from fastpaca.errors import LeadershipLost, NotLeader, Overloaded, ProposalTimeout, Unavailable
from fastpaca.observability.health import storage_not_stalled
from fastpaca.raft.driver import DriverConfig, RaftDriver
from fastpaca.raft.kv import KV, LevelDBKV, MemoryKV, WriteBatch
from fastpaca.raft.messages import ConfChange, ConfChangeOp, ConfState
from fastpaca.raft.testing import KVStateMachine, put_command
from fastpaca.raft.transport import Channel
from fastpaca.raft.transport_memory import InMemoryHub

NAMES = ("n1", "n2", "n3")
FAST = DriverConfig(tick_interval_ms=5, election_timeout_ticks=10, heartbeat_interval_ticks=2)


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


class Node:
    def __init__(self, name: str, kv: KV, driver: RaftDriver, sm: KVStateMachine) -> None:
        self.name, self.kv, self.driver, self.sm = name, kv, driver, sm


class Cluster:
    def __init__(self, root: Path, config: DriverConfig = FAST) -> None:
        self.root = root
        self.config = config
        self.hub = InMemoryHub()
        self.nodes: dict[str, Node] = {}

    async def start(self, name: str) -> Node:
        kv = LevelDBKV(str(self.root / name))
        sm = KVStateMachine(kv)
        transport = self.hub.transport(name)
        driver = RaftDriver(
            node_id=name,
            kv=kv,
            state_machine=sm,
            transport=transport,
            config=self.config,
            rng_seed=sum(map(ord, name)),
        )
        await transport.start()
        await driver.start()
        self.nodes[name] = Node(name, kv, driver, sm)
        return self.nodes[name]

    async def stop(self, name: str, *, transfer_leadership: bool = False) -> None:
        node = self.nodes.pop(name)
        await node.driver.stop(transfer_leadership=transfer_leadership)
        await self.hub.transport(name).stop()
        node.kv.close()

    async def close(self) -> None:
        for name in list(self.nodes):
            await self.stop(name)

    async def leader(self, group_id: int, among: tuple[str, ...] | None = None) -> Node:
        names = among or tuple(self.nodes)
        found: list[Node] = []

        def one_leader() -> bool:
            found[:] = [self.nodes[n] for n in names if self.nodes[n].driver.is_leader(group_id)]
            return len(found) == 1

        await wait_for(one_leader)
        return found[0]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path)
    for name in NAMES:
        await c.start(name)
        c.nodes[name].driver.ensure_group(0, NAMES)
    yield c
    await c.close()


async def test_single_node_proposes_applies_and_restarts_from_disk(tmp_path: Path) -> None:
    solo = Cluster(tmp_path)
    node = await solo.start("n1")
    node.driver.ensure_group(1, ["n1"])
    await wait_for(lambda: node.driver.is_leader(1))  # campaigns at once, alone
    assert await node.driver.propose(1, put_command(b"k", b"v1"), timeout_s=2) is None
    assert await node.driver.propose(1, put_command(b"k", b"v2"), timeout_s=2) == b"v1"
    assert node.driver.stats.commit_latency.samples == 2
    await solo.stop("n1")

    node = await solo.start("n1")
    assert node.driver.group_ids() == [1]
    assert node.sm.get(1, b"k") == b"v2"
    await wait_for(lambda: node.driver.is_leader(1))
    assert await node.driver.propose(1, put_command(b"k", b"v3"), timeout_s=2) == b"v2"
    await solo.close()


class _GatedKV(MemoryKV):
    """Counts synced writes; holds one in the writer thread while ``gate`` is clear."""

    def __init__(self) -> None:
        super().__init__()
        self.synced_writes = 0
        self.in_synced_write = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        if sync:
            self.synced_writes += 1
            self.in_synced_write.set()
            self.gate.wait(5)
        super().write(batch, sync=sync)


async def _gated_lone_leader() -> tuple[RaftDriver, _GatedKV, KVStateMachine]:
    """A driver leading group 1 alone over a ``_GatedKV``, ``k`` = ``v0`` applied."""
    kv = _GatedKV()
    sm = KVStateMachine(kv)
    transport = InMemoryHub().transport("n1")
    driver = RaftDriver(node_id="n1", kv=kv, state_machine=sm, transport=transport, config=FAST)
    await transport.start()
    await driver.start()
    driver.ensure_group(1, ["n1"])
    await wait_for(lambda: driver.is_leader(1))
    await driver.propose(1, put_command(b"k", b"v0"), timeout_s=2)
    return driver, kv, sm


async def test_single_voter_result_is_released_by_its_own_fsync() -> None:
    """Committed by its own write, so applied and released right after it,
    not after the next iteration's write (which carries newer proposals)."""
    driver, kv, sm = await _gated_lone_leader()

    synced_when_released: list[int] = []

    async def propose_first() -> None:
        await driver.propose(1, put_command(b"k", b"v1"), timeout_s=2)
        synced_when_released.append(kv.synced_writes)
        assert sm.get(1, b"k") == b"v1"  # readable once released

    kv.gate.clear()
    kv.in_synced_write.clear()
    synced_before = kv.synced_writes
    first = asyncio.create_task(propose_first())
    await wait_for(kv.in_synced_write.is_set)  # its entry is being fsync'd
    second = asyncio.create_task(driver.propose(1, put_command(b"k", b"v2"), timeout_s=2))
    await asyncio.sleep(0.01)  # the second proposal is queued meanwhile
    kv.gate.set()
    await asyncio.gather(first, second)
    assert synced_when_released == [synced_before + 1]
    await driver.stop()


async def test_lone_voter_reads_at_once_except_while_its_apply_is_being_written() -> None:
    driver, kv, sm = await _gated_lone_leader()

    # Nothing in flight: the barrier passes with no iteration at all.
    iterations = driver.stats.iterations
    await driver.read_barrier(1, timeout_s=2)
    assert driver.stats.iterations == iterations
    assert sm.get(1, b"k") == b"v0"

    # An apply committed but still being written: the read takes the read
    # index round and returns only once that write is done and visible.
    kv.gate.clear()
    kv.in_synced_write.clear()
    write = asyncio.create_task(driver.propose(1, put_command(b"k", b"v1"), timeout_s=2))
    await wait_for(kv.in_synced_write.is_set)
    read = asyncio.create_task(driver.read_barrier(1, timeout_s=2))
    await asyncio.sleep(0.02)
    assert not read.done()
    kv.gate.set()
    await read
    assert sm.get(1, b"k") == b"v1"
    await write
    await driver.stop()


class _ThreadRecordingKV(MemoryKV):
    """Records the thread each fsync'd write runs in (an apply pass's
    unsynced write runs inline, in the loop's thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.sync_threads: set[int] = set()

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        if sync:
            self.sync_threads.add(threading.get_ident())
        super().write(batch, sync=sync)


async def lone_leader(kv: KV) -> RaftDriver:
    """A started driver over ``kv`` whose only group (1) it leads alone."""
    transport = InMemoryHub().transport("n1")
    driver = RaftDriver(
        node_id="n1", kv=kv, state_machine=KVStateMachine(kv), transport=transport, config=FAST
    )
    await transport.start()
    await driver.start()
    driver.ensure_group(1, ["n1"])
    await wait_for(lambda: driver.is_leader(1))
    return driver


async def test_fsyncd_writes_run_in_the_writer_thread_not_the_loop() -> None:
    """The batch is sealed on the loop (``Iteration.seal``) and written, with
    its fsync, in the writer thread, so the loop keeps serving meanwhile."""
    kv = _ThreadRecordingKV()
    driver = await lone_leader(kv)
    try:
        for n in range(3):
            await driver.propose(1, put_command(b"k", b"v%d" % n), timeout_s=2)
    finally:
        await driver.stop()
    assert len(kv.sync_threads) == 1
    assert threading.get_ident() not in kv.sync_threads
    # Each of them timed for the write-time histogram (/metrics).
    assert driver.stats.synced_write_latency.samples == driver.stats.synced_writes >= 3


async def test_three_nodes_replicate_concurrent_proposals(cluster: Cluster) -> None:
    leader = await cluster.leader(0)
    results = await asyncio.gather(
        *(
            leader.driver.propose(0, put_command(b"key%d" % i, b"value"), timeout_s=5)
            for i in range(200)
        )
    )
    assert results == [None] * 200
    expected = leader.sm.items(0)
    assert len(expected) == 200
    await wait_for(lambda: all(n.sm.items(0) == expected for n in cluster.nodes.values()))
    # Group commit: far fewer synced writes than proposals.
    stats = leader.driver.stats
    assert stats.synced_writes < 100
    assert stats.proposals_applied == 200
    assert stats.commit_latency.samples == 200
    assert stats.leaders_held == 1
    for peer in NAMES:
        if peer != leader.name:
            assert stats.messages_sent[peer] >= stats.frames_sent[peer] > 0


async def test_follower_answers_not_leader_with_a_hint(cluster: Cluster) -> None:
    leader = await cluster.leader(0)
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    await wait_for(lambda: follower.driver.leader_of(0) == leader.name)
    with pytest.raises(NotLeader) as caught:
        await follower.driver.propose(0, b"x", timeout_s=1)
    assert caught.value.leader_hint == leader.name


async def test_leader_cut_off_loses_leadership_and_another_takes_over(cluster: Cluster) -> None:
    old = await cluster.leader(0)
    await old.driver.propose(0, put_command(b"before", b"1"), timeout_s=2)
    cluster.hub.isolate(old.name)
    with pytest.raises(LeadershipLost):  # check-quorum makes it step down
        await old.driver.propose(0, put_command(b"lost", b"1"), timeout_s=5)
    others = tuple(n for n in cluster.nodes if n != old.name)
    new = await cluster.leader(0, among=others)
    assert await new.driver.propose(0, put_command(b"before", b"2"), timeout_s=2) == b"1"
    cluster.hub.heal()
    await wait_for(lambda: old.sm.get(0, b"before") == b"2")
    assert not old.driver.is_leader(0)


async def test_followers_elect_at_once_when_the_leaders_connection_drops(
    tmp_path: Path,
) -> None:
    """The transport reports the dead leader's connection down: its followers
    campaign within a few ticks (RaftNode.leader_unreachable), not after the
    election timeout, which here is at least a second."""
    slow = DriverConfig(tick_interval_ms=5, election_timeout_ticks=200, heartbeat_interval_ticks=10)
    cluster = Cluster(tmp_path, slow)
    try:
        for name in NAMES:
            await cluster.start(name)
            cluster.nodes[name].driver.ensure_group(0, NAMES)
        old = await cluster.leader(0)
        await old.driver.propose(0, put_command(b"k", b"1"), timeout_s=5)
        others = tuple(n for n in NAMES if n != old.name)
        await wait_for(
            lambda: all(cluster.nodes[n].driver.leader_of(0) == old.name for n in others)
        )
        killed_at = time.monotonic()
        await cluster.stop(old.name)  # its transport stops: the others see the link drop
        new = await cluster.leader(0, among=others)
        elected_s = time.monotonic() - killed_at
        assert elected_s < 0.6, f"took {elected_s:.2f} s: waited for the election timeout"
        assert await new.driver.propose(0, put_command(b"k", b"2"), timeout_s=2) == b"1"
    finally:
        await cluster.close()


async def test_proposal_times_out_without_quorum(tmp_path: Path) -> None:
    slow_check = DriverConfig(tick_interval_ms=5, election_timeout_ticks=60)
    cluster = Cluster(tmp_path, slow_check)
    for name in NAMES:
        await cluster.start(name)
        cluster.nodes[name].driver.ensure_group(0, NAMES)
    try:
        leader = await cluster.leader(0)
        for name in NAMES:
            if name != leader.name:
                cluster.hub.isolate(name)
        with pytest.raises(ProposalTimeout):
            await leader.driver.propose(0, put_command(b"k", b"v"), timeout_s=0.05)
        assert leader.driver.stats.proposals_timed_out == 1
    finally:
        await cluster.close()


async def test_read_barrier_on_a_follower_sees_acknowledged_writes(cluster: Cluster) -> None:
    leader = await cluster.leader(0)
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    await wait_for(lambda: follower.driver.leader_of(0) == leader.name)
    for i in range(20):
        value = b"v%d" % i
        await leader.driver.propose(0, put_command(b"k", value), timeout_s=2)
        await follower.driver.read_barrier(0, timeout_s=2)
        assert follower.sm.get(0, b"k") == value
    await leader.driver.read_barrier(0, timeout_s=2)
    assert leader.sm.get(0, b"k") == b"v19"


async def test_node_down_while_log_compacted_catches_up_by_snapshot(tmp_path: Path) -> None:
    config = DriverConfig(
        tick_interval_ms=5,
        election_timeout_ticks=10,
        compact_threshold_entries=40,
        compact_keep_entries=10,
        snapshot_chunk_bytes=512,
    )
    cluster = Cluster(tmp_path, config)
    for name in NAMES:
        await cluster.start(name)
        cluster.nodes[name].driver.ensure_group(0, NAMES)
    try:
        leader = await cluster.leader(0)
        down = next(n for n in NAMES if n != leader.name)
        await cluster.stop(down)
        for batch in range(10):
            await asyncio.gather(
                *(
                    leader.driver.propose(
                        0, put_command(b"k%d-%d" % (batch, i), b"x" * 50), timeout_s=5
                    )
                    for i in range(20)
                )
            )
        assert leader.driver.host.core(0).first_index > 50  # compacted
        back = await cluster.start(down)
        await wait_for(lambda: back.sm.items(0) == leader.sm.items(0))
        assert back.driver.host.stats.snapshots_installed >= 1
        assert len(back.sm.items(0)) == 200
    finally:
        await cluster.close()


async def test_membership_add_learner_promote_then_remove(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    for name in NAMES:
        await cluster.start(name)
    for name in ("n1", "n2"):
        cluster.nodes[name].driver.ensure_group(3, ["n1", "n2"])
    cluster.nodes["n3"].driver.ensure_group(3, [])  # joins, waits for the leader
    try:
        leader = await cluster.leader(3)
        await leader.driver.propose(3, put_command(b"a", b"1"), timeout_s=2)
        add = ConfChange(op=ConfChangeOp.ADD_LEARNER, node_id="n3")
        conf = await leader.driver.change_membership(3, add, timeout_s=2)
        assert conf == ConfState(voters=("n1", "n2"), learners=("n3",))
        n3 = cluster.nodes["n3"]
        await wait_for(lambda: n3.sm.get(3, b"a") == b"1")
        promote = ConfChange(op=ConfChangeOp.ADD_VOTER, node_id="n3")
        conf = await leader.driver.change_membership(3, promote, timeout_s=2)
        assert conf == ConfState(voters=("n1", "n2", "n3"))
        other = "n2" if leader.name == "n1" else "n1"
        remove = ConfChange(op=ConfChangeOp.REMOVE, node_id=other)
        conf = await leader.driver.change_membership(3, remove, timeout_s=2)
        assert conf.voters == tuple(sorted((leader.name, "n3")))
        await leader.driver.propose(3, put_command(b"a", b"2"), timeout_s=2)
        await wait_for(lambda: n3.sm.get(3, b"a") == b"2")
        await wait_for(lambda: n3.driver.host.core(3).conf_state == conf)
        # The removed node is out of the quorum: cutting it changes nothing.
        cluster.hub.isolate(other)
        await leader.driver.propose(3, put_command(b"a", b"3"), timeout_s=2)
    finally:
        await cluster.close()


async def test_stop_hands_leadership_to_a_peer_before_leaving(cluster: Cluster) -> None:
    leader = await cluster.leader(0)
    await leader.driver.propose(0, put_command(b"k", b"v"), timeout_s=2)
    term = leader.driver.host.core(0).term
    await cluster.stop(leader.name, transfer_leadership=True)
    # No election timeout was waited for: a successor is already in place.
    successors = [n for n in cluster.nodes.values() if n.driver.is_leader(0)]
    assert len(successors) == 1
    assert successors[0].driver.host.core(0).term == term + 1
    assert await successors[0].driver.propose(0, put_command(b"k", b"w"), timeout_s=2) == b"v"


class _FailingKV(MemoryKV):
    fail_writes = False

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        if self.fail_writes:
            raise OSError("disk gone")
        super().write(batch, sync=sync)


async def test_failed_write_fails_pending_futures_instead_of_hanging() -> None:
    kv = _FailingKV()
    driver = await lone_leader(kv)
    failures: list[tuple[BaseException, int]] = []  # (error, proposals still pending)
    driver.on_failure(lambda error: failures.append((error, driver.pending_proposals)))
    assert driver.failure is None
    kv.fail_writes = True
    with pytest.raises(Unavailable):
        await driver.propose(1, put_command(b"k", b"v"), timeout_s=5)
    with pytest.raises(Unavailable):
        await driver.propose(1, b"", timeout_s=1)  # the node refuses new work
    # The server's hook (it shuts the node down): told once, with the
    # write's error, after every pending proposal was failed.
    assert [(str(error), pending) for error, pending in failures] == [("disk gone", 0)]
    assert driver.failure is failures[0][0]
    await driver.stop()
    assert len(failures) == 1


class _StallingKV(MemoryKV):
    """Writes block while ``stalled`` is clear: a disk that stops answering."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = threading.Event()
        self.stalled.set()

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        self.stalled.wait()
        super().write(batch, sync=sync)


async def test_a_write_stuck_in_the_disk_still_lets_callers_time_out() -> None:
    """The loop waits for its write; the callers' deadlines do not."""
    kv = _StallingKV()
    driver = await lone_leader(kv)
    try:
        kv.stalled.clear()
        started = time.monotonic()
        with pytest.raises(ProposalTimeout):
            # The outer bound only keeps a regression from hanging the suite.
            await asyncio.wait_for(driver.propose(1, put_command(b"k", b"v"), timeout_s=0.2), 5)
        assert time.monotonic() - started < 2.0
        assert driver.stats.proposals_timed_out == 1
        # Readiness sees the stall (the node's check uses a 5 s limit).
        assert driver.write_running_s() >= 0.2
        assert not storage_not_stalled(driver, limit_s=0.1)().is_ready
        kv.stalled.set()  # the disk answers again
        await wait_for(lambda: driver.write_running_s() == 0.0)
        assert storage_not_stalled(driver, limit_s=0.1)().is_ready
        # The stalled write shows in the write-time histogram (/metrics).
        assert driver.stats.synced_write_latency.quantile(1.0) >= 0.25
    finally:
        kv.stalled.set()  # the loop and stop go on
        await driver.stop()


async def test_a_plain_stop_is_not_a_failure() -> None:
    driver = await lone_leader(_FailingKV())
    failures: list[BaseException] = []
    driver.on_failure(failures.append)
    await driver.propose(1, put_command(b"k", b"v"), timeout_s=2)
    await driver.stop()
    assert failures == [] and driver.failure is None


async def test_on_written_runs_after_each_good_write_before_its_results_are_released() -> None:
    """The hook that releases a state machine's effects: called once the
    write holding an apply is done, before the proposer is settled, and
    never for a write that failed."""
    hub = InMemoryHub()
    kv = _FailingKV()
    sm = KVStateMachine(kv)
    transport = hub.transport("n1")
    seen: list[tuple[bytes | None, int]] = []  # per call: (durable value, proposals unsettled)
    driver: RaftDriver | None = None

    def on_written() -> None:
        assert driver is not None
        seen.append((sm.get(1, b"k"), driver.pending_proposals))

    driver = RaftDriver(
        node_id="n1",
        kv=kv,
        state_machine=sm,
        transport=transport,
        config=FAST,
        on_written=on_written,
    )
    await transport.start()
    await driver.start()
    driver.ensure_group(1, ["n1"])
    await wait_for(lambda: driver is not None and driver.is_leader(1))
    await driver.propose(1, put_command(b"k", b"v1"), timeout_s=2)
    assert (b"v1", 1) in seen  # applied and written, its proposer not yet told
    calls_before = len(seen)
    kv.fail_writes = True
    with pytest.raises(Unavailable):
        await driver.propose(1, put_command(b"k", b"v2"), timeout_s=5)
    assert len(seen) == calls_before
    await driver.stop()


async def test_malformed_frame_is_refused_and_counted(cluster: Cluster) -> None:
    leader = await cluster.leader(0)
    victim = next(n for n in cluster.nodes.values() if n is not leader)
    transport = cluster.hub.transport(leader.name)
    assert transport.send(victim.name, Channel.RAFT, b"\x01\x02garbage")
    await wait_for(lambda: victim.driver.stats.malformed_frames == 1)
    assert cluster.hub.transport(victim.name).handler_errors == 1  # the link would close
    # The node is unharmed.
    assert await leader.driver.propose(0, put_command(b"k", b"v"), timeout_s=2) is None


async def test_too_many_pending_proposals_is_overloaded(tmp_path: Path) -> None:
    config = DriverConfig(tick_interval_ms=5, election_timeout_ticks=60, max_pending_proposals=1)
    cluster = Cluster(tmp_path, config)
    for name in NAMES:
        await cluster.start(name)
        cluster.nodes[name].driver.ensure_group(0, NAMES)
    try:
        leader = await cluster.leader(0)
        for name in NAMES:
            if name != leader.name:
                cluster.hub.isolate(name)
        stuck = asyncio.ensure_future(leader.driver.propose(0, b"", timeout_s=0.2))
        await wait_for(lambda: leader.driver.pending_proposals == 1)
        with pytest.raises(Overloaded):
            await leader.driver.propose(0, b"", timeout_s=0.2)
        with pytest.raises(ProposalTimeout):
            await stuck
    finally:
        await cluster.close()
