"""LevelDBStorage on a real LevelDB in a temp dir: round trips, restart rebuild,
truncation, compaction, snapshots and corruption detection."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastpaca.errors import CorruptLogError
from fastpaca.raft.kv import LevelDBKV, MemoryKV, WriteBatch
from fastpaca.raft.leveldb import CacheBudget, LevelDBStorage, group_prefix
from fastpaca.raft.messages import ConfState, Entry, EntryType, HardState, SnapshotMeta
from fastpaca.raft.storage import CompactedError, UnavailableError


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "raft-db")


@pytest.fixture
def kv(db_path: str) -> Iterator[LevelDBKV]:
    store = LevelDBKV(db_path)
    yield store
    store.close()


def _entries(lo: int, hi: int, term: int, size: int = 10) -> list[Entry]:
    return [Entry(index=i, term=term, data=bytes([i % 256]) * size) for i in range(lo, hi + 1)]


def _write(kv: LevelDBKV | MemoryKV, storage: LevelDBStorage, stage: object) -> None:
    """Run ``stage(batch)``, write the batch synced, commit the view."""
    batch = WriteBatch(kv)
    stage(batch)  # type: ignore[operator]
    kv.write(batch, sync=True)
    storage.on_written()


_REPLICATED = ConfState(voters=("n1", "n2", "n3"))


def _open_replicated(kv: LevelDBKV, group_id: int, **kwargs: object) -> LevelDBStorage:
    """A group with followers, whose storage caches recent entries for them."""
    storage = LevelDBStorage.open(kv, group_id, **kwargs)  # type: ignore[arg-type]
    _write(kv, storage, lambda b: storage.stage_conf_state(b, _REPLICATED))
    return storage


def _entry_key(group_id: int, index: int) -> bytes:
    return group_prefix(group_id) + b"e" + struct.pack(">Q", index)


def test_append_hard_state_conf_state_round_trip_and_restart(db_path: str) -> None:
    kv = LevelDBKV(db_path)
    storage = LevelDBStorage.open(kv, 7)
    assert (storage.first_index(), storage.last_index()) == (1, 0)
    hs = HardState(term=3, vote="n2", commit=4)
    cs = ConfState(voters=("n1", "n2", "n3"), learners=("n4",))

    def stage(batch: WriteBatch) -> None:
        storage.stage_append(batch, _entries(1, 5, term=3))
        storage.stage_hard_state(batch, hs)
        storage.stage_conf_state(batch, cs)

    _write(kv, storage, stage)
    assert storage.initial_state() == (hs, cs)
    assert storage.entries(1, 6) == _entries(1, 5, term=3)
    assert [storage.term(i) for i in range(0, 6)] == [0, 3, 3, 3, 3, 3]

    kv.close()
    reopened_kv = LevelDBKV(db_path)
    try:
        reopened = LevelDBStorage.open(reopened_kv, 7)
        assert reopened.initial_state() == (hs, cs)
        assert (reopened.first_index(), reopened.last_index()) == (1, 5)
        assert reopened.entries(2, 5) == _entries(2, 4, term=3)
        assert LevelDBStorage.list_groups(reopened_kv) == [7]
    finally:
        reopened_kv.close()


def test_view_moves_only_when_written(kv: LevelDBKV) -> None:
    storage = LevelDBStorage.open(kv, 1)
    batch = WriteBatch(kv)
    storage.stage_append(batch, _entries(1, 3, term=1))
    storage.stage_hard_state(batch, HardState(term=1, commit=1))
    assert storage.last_index() == 0
    assert storage.initial_state()[0] == HardState()
    storage.on_write_failed()
    assert storage.last_index() == 0
    # A later batch starts from the durable view again.
    _write(kv, storage, lambda b: storage.stage_append(b, _entries(1, 2, term=2)))
    assert storage.entries(1, 3) == _entries(1, 2, term=2)


def test_append_truncates_conflicting_suffix(kv: LevelDBKV) -> None:
    storage = LevelDBStorage.open(kv, 2)
    _write(kv, storage, lambda b: storage.stage_append(b, _entries(1, 10, term=1)))
    _write(kv, storage, lambda b: storage.stage_append(b, _entries(6, 7, term=2)))
    assert storage.last_index() == 7
    assert storage.entries(1, 8) == _entries(1, 5, term=1) + _entries(6, 7, term=2)
    with pytest.raises(UnavailableError):
        storage.term(8)
    # The truncated records are gone from disk, not just from the view.
    assert kv.get(_entry_key(2, 8)) is None
    assert LevelDBStorage.open(kv, 2).last_index() == 7


def test_append_with_gap_is_refused(kv: LevelDBKV) -> None:
    storage = LevelDBStorage.open(kv, 2)
    with pytest.raises(ValueError, match="cannot append"):
        storage.stage_append(WriteBatch(kv), _entries(3, 4, term=1))


def test_entries_honours_max_bytes_but_returns_at_least_one(kv: LevelDBKV) -> None:
    storage = LevelDBStorage.open(kv, 3, cache_max_entries=8)
    _write(kv, storage, lambda b: storage.stage_append(b, _entries(1, 40, term=1, size=100)))
    # Cached tail and the LevelDB path must agree.
    for lo in (1, 38):
        assert [e.index for e in storage.entries(lo, 41, max_bytes=250)] == [lo, lo + 1]
        assert [e.index for e in storage.entries(lo, 41, max_bytes=10)] == [lo]
    assert storage.entries(1, 41) == _entries(1, 40, term=1, size=100)
    assert storage.entries(5, 5) == []


def test_compact_keeps_tail_and_survives_restart(kv: LevelDBKV) -> None:
    storage = LevelDBStorage.open(kv, 4)
    _write(kv, storage, lambda b: storage.stage_conf_state(b, ConfState(voters=("n1",))))
    _write(kv, storage, lambda b: storage.stage_append(b, _entries(1, 20, term=2)))
    _write(kv, storage, lambda b: storage.stage_compact(b, 15))
    assert (storage.first_index(), storage.last_index()) == (16, 20)
    assert storage.term(15) == 2
    assert storage.snapshot_meta() == SnapshotMeta(
        index=15, term=2, conf_state=ConfState(voters=("n1",))
    )
    with pytest.raises(CompactedError):
        storage.entries(15, 17)
    with pytest.raises(CompactedError):
        storage.term(14)
    assert kv.get(_entry_key(4, 15)) is None
    reopened = LevelDBStorage.open(kv, 4)
    assert (reopened.first_index(), reopened.last_index()) == (16, 20)
    assert reopened.entries(16, 21) == _entries(16, 20, term=2)


def test_snapshot_drops_whole_log_and_sets_membership(kv: LevelDBKV) -> None:
    storage = LevelDBStorage.open(kv, 5)
    _write(kv, storage, lambda b: storage.stage_append(b, _entries(1, 10, term=1)))
    meta = SnapshotMeta(index=50, term=4, conf_state=ConfState(voters=("a", "b", "c")))
    _write(kv, storage, lambda b: storage.stage_snapshot(b, meta))
    assert (storage.first_index(), storage.last_index()) == (51, 50)
    assert storage.term(50) == 4
    assert storage.initial_state()[1] == meta.conf_state
    assert list(kv.iterate(_entry_key(5, 0), _entry_key(5, 1 << 40))) == []
    _write(kv, storage, lambda b: storage.stage_append(b, _entries(51, 52, term=4)))
    reopened = LevelDBStorage.open(kv, 5)
    assert reopened.snapshot_meta() == meta
    assert reopened.entries(51, 53) == _entries(51, 52, term=4)


def test_snapshot_then_append_in_one_batch(kv: LevelDBKV) -> None:
    storage = LevelDBStorage.open(kv, 6)
    _write(kv, storage, lambda b: storage.stage_append(b, _entries(1, 3, term=1)))
    meta = SnapshotMeta(index=9, term=2, conf_state=ConfState(voters=("a",)))

    def stage(batch: WriteBatch) -> None:
        storage.stage_snapshot(batch, meta)
        storage.stage_append(batch, _entries(10, 12, term=2))
        storage.stage_hard_state(batch, HardState(term=2, commit=9))

    _write(kv, storage, stage)
    assert (storage.first_index(), storage.last_index()) == (10, 12)
    assert storage.entries(10, 13) == _entries(10, 12, term=2)


@pytest.mark.parametrize("base", [0, 7162])
def test_log_of_one_entry_above_the_base_survives_restart(kv: LevelDBKV, base: int) -> None:
    # The cluster soak's crash: a follower installed a snapshot at 7162,
    # appended, committed and applied 7163, then was killed. Reopening read
    # the last index as 7162 (plyvel's reverse range read skipped the only
    # key, which was its lower bound) and refused commit 7163.
    storage = LevelDBStorage.open(kv, 9)
    voters = ConfState(voters=("a", "b", "c"))
    if base:
        meta = SnapshotMeta(index=base, term=49, conf_state=voters)
        _write(kv, storage, lambda b: storage.stage_snapshot(b, meta))
    entry = _entries(base + 1, base + 1, term=49)

    def stage(batch: WriteBatch) -> None:
        storage.stage_append(batch, entry)
        storage.stage_hard_state(batch, HardState(term=49, commit=base + 1))

    _write(kv, storage, stage)
    reopened = LevelDBStorage.open(kv, 9)
    assert (reopened.first_index(), reopened.last_index()) == (base + 1, base + 1)
    assert reopened.entries(base + 1, base + 2) == entry


def test_groups_are_isolated_and_listed(kv: LevelDBKV) -> None:
    for group_id in (0, 3, 255, 0xFFFF):
        storage = LevelDBStorage.open(kv, group_id)
        _write(
            kv,
            storage,
            lambda b, s=storage, g=group_id: s.stage_append(b, _entries(1, g % 7 + 1, term=1)),
        )
    kv.write(_batch_with(kv, b"s\x00\x03state", b"x"), sync=True)  # a state-machine key
    assert LevelDBStorage.list_groups(kv) == [0, 3, 255, 0xFFFF]
    assert LevelDBStorage.open(kv, 3).last_index() == 4
    assert LevelDBStorage.open(kv, 255).last_index() == 4
    assert LevelDBStorage.open(kv, 0xFFFF).last_index() == 2
    doomed = LevelDBStorage.open(kv, 3)
    _write(kv, doomed, doomed.stage_destroy)
    assert LevelDBStorage.list_groups(kv) == [0, 255, 0xFFFF]
    assert kv.get(b"s\x00\x03state") == b"x"


def test_corrupt_entry_is_reported_with_group_and_index(kv: LevelDBKV) -> None:
    storage = LevelDBStorage.open(kv, 9, cache_max_entries=4)
    _write(kv, storage, lambda b: storage.stage_append(b, _entries(1, 30, term=1)))
    record = kv.get(_entry_key(9, 12))
    assert record is not None
    flipped = record[:-1] + bytes([record[-1] ^ 0x01])
    kv.write(_batch_with(kv, _entry_key(9, 12), flipped), sync=True)
    with pytest.raises(CorruptLogError) as caught:
        storage.entries(10, 14)
    assert (caught.value.group_id, caught.value.index) == (9, 12)
    with pytest.raises(CorruptLogError, match="checksum"):
        storage.term(12)


def test_truncated_entry_record_is_reported(kv: LevelDBKV) -> None:
    storage = LevelDBStorage.open(kv, 9)
    _write(kv, storage, lambda b: storage.stage_append(b, _entries(1, 3, term=1)))
    record = kv.get(_entry_key(9, 3))
    assert record is not None
    for cut in (len(record) - 1, 8):
        kv.write(_batch_with(kv, _entry_key(9, 3), record[:cut]), sync=True)
        with pytest.raises(CorruptLogError) as caught:
            LevelDBStorage.open(kv, 9)  # restart verifies the newest entries
        assert (caught.value.group_id, caught.value.index) == (9, 3)


def test_entry_moved_to_another_index_fails_its_checksum(kv: LevelDBKV) -> None:
    storage = LevelDBStorage.open(kv, 1)
    _write(kv, storage, lambda b: storage.stage_append(b, _entries(1, 2, term=1)))
    record = kv.get(_entry_key(1, 1))
    assert record is not None
    kv.write(_batch_with(kv, _entry_key(1, 2), record), sync=True)
    with pytest.raises(CorruptLogError) as caught:
        LevelDBStorage.open(kv, 1)
    assert caught.value.index == 2


def test_missing_entry_in_the_middle_is_reported(kv: LevelDBKV) -> None:
    storage = LevelDBStorage.open(kv, 1, cache_max_entries=4)
    _write(kv, storage, lambda b: storage.stage_append(b, _entries(1, 20, term=1)))
    batch = WriteBatch(kv)
    batch.delete(_entry_key(1, 5))
    kv.write(batch, sync=True)
    with pytest.raises(CorruptLogError) as caught:
        storage.entries(1, 10)
    assert caught.value.index == 5


def test_corrupt_hard_state_is_reported(kv: LevelDBKV) -> None:
    storage = LevelDBStorage.open(kv, 8)
    _write(kv, storage, lambda b: storage.stage_hard_state(b, HardState(term=5, vote="n1")))
    record = kv.get(group_prefix(8) + b"h")
    assert record is not None
    kv.write(_batch_with(kv, group_prefix(8) + b"h", record[:-2]), sync=True)
    with pytest.raises(CorruptLogError, match="hard state"):
        LevelDBStorage.open(kv, 8)


def test_conf_change_entry_type_round_trips_on_memory_kv() -> None:
    # The same storage runs over MemoryKV for the simulator.
    kv = MemoryKV()
    storage = LevelDBStorage.open(kv, 1)
    entry = Entry(index=1, term=1, type=EntryType.CONF_CHANGE, data=b"{}")
    _write(kv, storage, lambda b: storage.stage_append(b, [entry]))
    assert LevelDBStorage.open(kv, 1).entries(1, 2) == [entry]


def test_cache_stays_bounded_and_reads_fall_back_to_disk(kv: LevelDBKV) -> None:
    storage = LevelDBStorage.open(kv, 1, cache_max_entries=16)
    for lo in range(1, 200, 10):
        _write(kv, storage, lambda b, lo=lo: storage.stage_append(b, _entries(lo, lo + 9, term=1)))
    assert len(storage._cache) <= 16
    assert storage.entries(1, 201) == _entries(1, 200, term=1)
    assert [storage.term(i) for i in (1, 100, 200)] == [1, 1, 1]


def _batch_with(kv: LevelDBKV, key: bytes, value: bytes) -> WriteBatch:
    batch = WriteBatch(kv)
    batch.put(key, value)
    return batch


def test_read_spanning_disk_and_cache_is_contiguous(kv: LevelDBKV) -> None:
    storage = LevelDBStorage.open(kv, 1, cache_max_entries=8)
    _write(kv, storage, lambda b: storage.stage_append(b, _entries(1, 30, term=1, size=10)))
    assert storage._cache_first > 5  # the read below needs both disk and cache
    assert storage.entries(5, 31) == _entries(5, 30, term=1, size=10)
    assert [e.index for e in storage.entries(5, 31, max_bytes=35)] == [5, 6, 7]


def test_cache_budget_drops_the_least_recently_appended_group_first(kv: LevelDBKV) -> None:
    budget = CacheBudget(max_bytes=2500)
    storages = [_open_replicated(kv, g, budget=budget) for g in range(3)]
    for storage in storages:  # 1,000 bytes of entries each
        _write(
            kv, storage, lambda b, s=storage: s.stage_append(b, _entries(1, 10, term=1, size=100))
        )
    assert budget.total_bytes <= 2500
    assert storages[0]._cache == []  # oldest evicted
    assert len(storages[2]._cache) == 10
    # Evicted or not, every read still answers (from LevelDB).
    assert storages[0].entries(1, 11) == _entries(1, 10, term=1, size=100)


def test_tails_warmed_on_open_count_against_the_budget(kv: LevelDBKV) -> None:
    # A restart opens every group and warms its newest entries; without the
    # budget those caches were unbounded in total (one per group).
    for g in range(4):  # 1,000 bytes of entries in each group's log
        storage = _open_replicated(kv, g)
        _write(
            kv, storage, lambda b, s=storage: s.stage_append(b, _entries(1, 10, term=1, size=100))
        )
    budget = CacheBudget(max_bytes=2500)
    reopened = [LevelDBStorage.open(kv, g, budget=budget) for g in range(4)]
    assert budget.total_bytes <= 2500
    assert sum(s._cache_bytes for s in reopened) == budget.total_bytes
    assert reopened[0]._cache == []  # the first opened is evicted first
    assert reopened[0].entries(1, 11) == _entries(1, 10, term=1, size=100)


def test_a_group_with_no_other_member_caches_only_its_last_entry(kv: LevelDBKV) -> None:
    # Nobody replicates from it and it applies entries from the write that
    # stages them: a cache would only cost memory (and the budget's churn).
    budget = CacheBudget(max_bytes=1 << 20)
    storage = LevelDBStorage.open(kv, 1, budget=budget)
    _write(kv, storage, lambda b: storage.stage_conf_state(b, ConfState(voters=("n1",))))
    _write(kv, storage, lambda b: storage.stage_append(b, _entries(1, 10, term=2, size=100)))
    _write(kv, storage, lambda b: storage.stage_append(b, _entries(11, 20, term=3, size=100)))
    assert storage._cache == _entries(20, 20, term=3, size=100)
    assert budget.total_bytes == 0
    expected = _entries(1, 10, term=2, size=100) + _entries(11, 20, term=3, size=100)
    assert storage.entries(1, 21) == expected  # all but the last from LevelDB
    delete_last = WriteBatch(kv)
    delete_last.delete(_entry_key(1, 20))
    kv.write(delete_last, sync=True)
    assert storage.term(20) == 3, "the last term is answered from memory"
    # A member joins: from then on the storage caches for the followers.
    _write(kv, storage, lambda b: storage.stage_conf_state(b, _REPLICATED))
    _write(kv, storage, lambda b: storage.stage_append(b, _entries(21, 25, term=3, size=100)))
    assert storage._cache == _entries(20, 25, term=3, size=100)
    assert budget.total_bytes == 6 * 100
