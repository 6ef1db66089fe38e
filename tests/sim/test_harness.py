"""The harness's own parts, checked in isolation: event order, network faults,
the disk's crash model, and that each checker rule actually fires."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from fastpaca.raft.kv import WriteBatch
from fastpaca.raft.messages import Entry, EntryType

from .checker import InvariantChecker, InvariantViolation
from .disk import SimDisk
from .events import EventQueue
from .network import SimNetwork
from .params import draw_params

# --- events ------------------------------------------------------------------------


def test_events_at_the_same_instant_run_in_scheduling_order() -> None:
    queue = EventQueue()
    ran: list[tuple[int, str]] = []

    def record(name: str) -> Callable[[], None]:
        return lambda: ran.append((queue.now_ms, name))

    for name in ("c", "a", "b"):
        queue.schedule(5, name, record(name))
    queue.schedule(1, "first", record("first"))
    while (popped := queue.pop_until(10)) is not None:
        popped[1]()
    assert ran == [(1, "first"), (5, "c"), (5, "a"), (5, "b")]
    assert queue.now_ms == 10, "an empty queue jumps the clock to the deadline"


# --- network -----------------------------------------------------------------------


def _network(seed: int) -> tuple[SimNetwork, EventQueue, list[tuple[int, str, str, object]]]:
    rng = random.Random(seed)
    params = draw_params(seed, rng, safety_ms=1000)
    queue = EventQueue()
    got: list[tuple[int, str, str, object]] = []
    net = SimNetwork(params, rng, queue, lambda a, b, p: got.append((queue.now_ms, a, b, p)))
    return net, queue, got


def _drain(queue: EventQueue) -> None:
    while (popped := queue.pop_until(queue.now_ms + 10**6)) is not None:
        popped[1]()


def test_network_replays_the_same_deliveries_for_a_seed() -> None:
    runs = []
    for _ in range(2):
        net, queue, got = _network(3)
        for i in range(200):
            net.send("n1", "n2", i)
            net.send("n2", "n3", i)
        _drain(queue)
        runs.append(got)
    assert runs[0] == runs[1]
    assert runs[0], "some payloads must arrive"


def test_two_way_split_cuts_both_directions_and_heal_restores() -> None:
    net, queue, got = _network(1)
    net.faults_enabled = False
    net.split(["n1"], one_way=False)
    assert not net.send("n1", "n2", "out"), "a cut link is visible to the sender"
    assert not net.send("n2", "n1", "in")
    assert net.send("n2", "n3", "other")
    _drain(queue)
    assert [p for *_, p in got] == ["other"]
    net.heal()
    net.send("n1", "n2", "after")
    _drain(queue)
    assert [p for *_, p in got] == ["other", "after"]


def test_one_way_split_cuts_only_outgoing() -> None:
    net, queue, got = _network(1)
    net.faults_enabled = False
    net.split(["n1"], one_way=True)
    net.send("n1", "n2", "out")
    net.send("n2", "n1", "in")
    _drain(queue)
    assert [p for *_, p in got] == ["in"]


def test_payload_in_flight_is_lost_when_its_link_is_cut() -> None:
    net, queue, got = _network(1)
    net.faults_enabled = False
    net.send("n1", "n2", "doomed")
    net.block([("n1", "n2")])
    _drain(queue)
    assert got == [] and net.stats.cut == 1


def test_faults_drop_duplicate_and_reorder() -> None:
    net, queue, got = _network(0)
    params = draw_params(0, random.Random(0), safety_ms=1000)
    object.__setattr__(params, "drop_rate", 0.2)
    object.__setattr__(params, "duplicate_rate", 0.2)
    object.__setattr__(params, "reorder_rate", 0.3)
    net._params = params
    for i in range(500):
        net.send("n1", "n2", i)
    _drain(queue)
    payloads = [p for *_, p in got if isinstance(p, int)]
    assert net.stats.dropped > 0 and net.stats.duplicated > 0
    assert len(set(payloads)) < 500 < len(payloads) + net.stats.dropped
    assert payloads != sorted(payloads), "jitter and reordering must reorder"


# --- disk --------------------------------------------------------------------------


def _batch(disk: SimDisk, **pairs: str) -> WriteBatch:
    batch = WriteBatch(disk)
    for key, value in pairs.items():
        batch.put(key.encode(), value.encode())
    return batch


@pytest.mark.parametrize("storage", ["memory", "leveldb"])
def test_crash_loses_unsynced_writes_only(storage: str, tmp_path: Path) -> None:
    disk = SimDisk(
        storage=storage, directory=str(tmp_path), rng=random.Random(0), write_fault_rate=0
    )
    disk.write(_batch(disk, a="1"), sync=True)
    disk.write(_batch(disk, b="2"), sync=False)
    assert disk.get(b"b") == b"2", "unsynced writes are readable until a crash"
    assert [k for k, _ in disk.iterate(b"a", b"z")] == [b"a", b"b"]
    disk.crash()
    assert disk.get(b"a") == b"1"
    assert disk.get(b"b") is None
    disk.write(_batch(disk, c="3"), sync=False)
    disk.write(_batch(disk, d="4"), sync=True)
    disk.crash()
    assert disk.get(b"c") == b"3", "a synced write makes earlier writes durable"
    disk.close()


@pytest.mark.parametrize("storage", ["memory", "leveldb"])
def test_lying_disk_loses_acknowledged_writes(storage: str, tmp_path: Path) -> None:
    disk = SimDisk(
        storage=storage,
        directory=str(tmp_path),
        rng=random.Random(0),
        write_fault_rate=0,
        lie_about_sync=1.0,
    )
    disk.write(_batch(disk, a="1"), sync=True)
    disk.crash()
    assert disk.get(b"a") is None
    disk.close()


# --- checker -----------------------------------------------------------------------


def _entry(index: int, term: int, data: bytes = b"x") -> Entry:
    return Entry(index=index, term=term, data=data)


def test_checker_catches_two_leaders_in_one_term() -> None:
    checker = InvariantChecker()
    checker.observe_leader("n1", 0, 3)
    checker.observe_leader("n1", 0, 3)
    checker.observe_leader("n2", 1, 3)  # another group may have its own
    with pytest.raises(InvariantViolation, match="election safety"):
        checker.observe_leader("n2", 0, 3)


def test_checker_catches_log_mismatch() -> None:
    checker = InvariantChecker()
    checker.observe_persisted("n1", 0, [_entry(1, 1), _entry(2, 1, b"a")], prev_term=0)
    checker.observe_persisted("n2", 0, [_entry(2, 1, b"a")], prev_term=1)
    with pytest.raises(InvariantViolation, match="log matching"):
        checker.observe_persisted("n3", 0, [_entry(2, 1, b"b")], prev_term=1)
    with pytest.raises(InvariantViolation, match="log matching"):
        checker.observe_persisted("n3", 0, [_entry(2, 1, b"a")], prev_term=0)


def test_checker_catches_a_changed_commit() -> None:
    checker = InvariantChecker()
    checker.observe_committed("n1", 0, _entry(1, 1, b"a"), 1)
    with pytest.raises(InvariantViolation, match="commit stability"):
        checker.observe_committed("n2", 0, _entry(1, 2, b"a"), 2)


def test_checker_catches_apply_gaps_and_duplicates() -> None:
    checker = InvariantChecker()
    checker.observe_applied("n1", 0, [_entry(1, 1, b"a"), _entry(2, 1, b"b")], 1)
    with pytest.raises(InvariantViolation, match="apply order"):
        checker.observe_applied("n1", 0, [_entry(4, 1, b"c")], 1)
    with pytest.raises(InvariantViolation, match="exactly once"):
        checker.observe_applied(
            "n2", 0, [_entry(1, 1, b"a"), _entry(2, 1, b"b"), _entry(3, 1, b"a")], 1
        )
    fresh = InvariantChecker()
    fresh.reset_applied("n3", 0, 2)  # e.g. restored a snapshot at 2
    fresh.observe_applied("n3", 0, [Entry(index=3, term=1, type=EntryType.CONF_CHANGE)], 1)
    assert fresh.applied_index[("n3", 0)] == 3


def test_checker_catches_false_acks_lost_acks_and_stale_reads() -> None:
    checker = InvariantChecker()
    checker.observe_applied("n1", 0, [_entry(1, 1, b"a")], 1)
    with pytest.raises(InvariantViolation, match="acknowledgement"):
        checker.observe_ack(0, b"b", 1)
    checker.observe_read_requested(0, b"r0")
    checker.observe_ack(0, b"a", 1)
    checker.observe_read_requested(0, b"r1")
    checker.observe_read_served("n1", 0, b"r0", 0)
    with pytest.raises(InvariantViolation, match="linearizable read"):
        checker.observe_read_served("n1", 0, b"r1", 0)
    assert checker.acked_beyond(0, 1) == []
    assert checker.acked_beyond(0, 0) == [b"a"]
    assert [e.data for e in checker.committed_log(0, 1)] == [b"a"]
    with pytest.raises(InvariantViolation, match="observation gap"):
        checker.committed_log(0, 2)


def test_checker_catches_a_leader_missing_committed_entries() -> None:
    checker = InvariantChecker()
    for index in (1, 2, 3):
        checker.observe_committed("n1", 0, _entry(index, 1), 1)
    terms = {1: 1, 2: 1, 3: 1}
    checker.check_leader_completeness("n2", 0, 2, (1, 3, terms.__getitem__))
    # A leader of term 1 seen late need not hold what was committed in term 1.
    checker.check_leader_completeness("n4", 0, 1, (1, 1, terms.__getitem__))
    checker.check_leader_completeness("n2", 0, 2, (3, 3, terms.__getitem__))  # 1-2 in snapshot
    with pytest.raises(InvariantViolation, match="leader completeness"):
        checker.check_leader_completeness("n3", 0, 2, (1, 2, terms.__getitem__))
    with pytest.raises(InvariantViolation, match="leader completeness"):
        checker.check_leader_completeness("n3", 0, 2, (1, 3, {1: 1, 2: 2, 3: 2}.__getitem__))
