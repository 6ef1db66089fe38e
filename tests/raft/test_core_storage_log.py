"""MemoryStorage (the reference LogStorage), RaftLog and Progress in isolation."""

from __future__ import annotations

import itertools

import pytest

from fastpaca.errors import InvariantViolation
from fastpaca.raft.log import RaftLog
from fastpaca.raft.messages import ConfState, Entry, HardState, SnapshotMeta
from fastpaca.raft.progress import Progress, ProgressState, ProgressTracker, VoteResult
from fastpaca.raft.storage import CompactedError, MemoryStorage, UnavailableError


def entries(*terms: int, start: int = 1, size: int = 0) -> list[Entry]:
    return [Entry(index=start + i, term=t, data=b"d" * size) for i, t in enumerate(terms)]


def storage_with(*terms: int) -> MemoryStorage:
    storage = MemoryStorage()
    storage.append(entries(*terms))
    return storage


# --- MemoryStorage ----------------------------------------------------------------------


def test_empty_storage_bounds() -> None:
    storage = MemoryStorage()
    assert (storage.first_index(), storage.last_index(), storage.term(0)) == (1, 0, 0)
    assert storage.entries(1, 1) == []
    with pytest.raises(UnavailableError):
        storage.term(1)
    assert storage.initial_state() == (HardState(), ConfState())


def test_storage_append_truncates_conflicting_suffix() -> None:
    storage = storage_with(1, 1, 1, 1)
    storage.append(entries(2, 2, start=3))
    assert [e.term for e in storage.entries(1, 5)] == [1, 1, 2, 2]
    with pytest.raises(InvariantViolation):
        storage.append(entries(2, start=7))  # gap


def test_storage_entries_respect_max_bytes_but_return_one() -> None:
    storage = MemoryStorage()
    storage.append(entries(1, 1, 1, size=10))
    assert len(storage.entries(1, 4, max_bytes=25)) == 2
    assert len(storage.entries(1, 4, max_bytes=1)) == 1
    with pytest.raises(UnavailableError):
        storage.entries(1, 5)


def test_storage_compact_keeps_snapshot_term_and_rejects_recompaction() -> None:
    storage = MemoryStorage(conf_state=ConfState(voters=("a",)))
    storage.append(entries(1, 1, 2, 2))
    storage.compact(3)
    assert (storage.first_index(), storage.last_index(), storage.term(3)) == (4, 4, 2)
    assert storage.snapshot_meta() == SnapshotMeta(
        index=3, term=2, conf_state=ConfState(voters=("a",))
    )
    with pytest.raises(CompactedError):
        storage.term(2)
    with pytest.raises(CompactedError):
        storage.entries(3, 4)
    with pytest.raises(CompactedError):
        storage.compact(3)
    with pytest.raises(AssertionError):
        storage.compact(9)


def test_storage_apply_snapshot_resets_log_and_membership() -> None:
    storage = storage_with(1, 1)
    conf = ConfState(voters=("a", "b"))
    storage.apply_snapshot(SnapshotMeta(index=10, term=3, conf_state=conf))
    assert (storage.first_index(), storage.last_index(), storage.term(10)) == (11, 10, 3)
    assert storage.initial_state() == (HardState(commit=10), conf)
    storage.append(entries(3, start=11))
    assert storage.last_index() == 11


# --- RaftLog ----------------------------------------------------------------------------


def test_log_reads_span_stable_and_unstable_with_byte_limit() -> None:
    storage = MemoryStorage()
    storage.append(entries(1, 1, size=10))
    log = RaftLog(storage, committed=0, applied=0)
    log.append(entries(1, 1, start=3, size=10))
    assert [e.index for e in log.entries(1, 5)] == [1, 2, 3, 4]
    assert [e.index for e in log.entries(2, 5, max_bytes=20)] == [2, 3]
    assert [e.index for e in log.entries(3, 5, max_bytes=1)] == [3]
    assert log.last_index() == 4 and log.term(4) == 1


def test_log_truncation_into_stable_part_is_handed_out_for_rewrite() -> None:
    log = RaftLog(storage_with(1, 1, 1), committed=1, applied=1)
    log.append(entries(2, start=2))
    assert log.next_unstable_entries() == entries(2, start=2)
    assert log.last_index() == 2 and log.term(2) == 2
    with pytest.raises(InvariantViolation):
        log.append(entries(3, start=1))  # at or below commit


def test_log_stable_to_ignores_a_rewritten_tail() -> None:
    storage = MemoryStorage()
    log = RaftLog(storage, committed=0, applied=0)
    log.append(entries(1, 1))
    handed = log.next_unstable_entries()
    log.append(entries(2, start=2))  # rewrites index 2 before the write is reported
    storage.append(handed)
    assert not log.stable_to(2, 1)
    assert log.has_next_unstable() and log.next_unstable_entries() == entries(2, start=2)


def test_log_maybe_append_and_conflict_hint() -> None:
    log = RaftLog(storage_with(1, 1, 2, 2, 2), committed=1, applied=1)
    assert log.maybe_append(5, 3, 5, ()) is None  # (5, 3) is not in the log
    assert log.find_conflict_by_term(5, 1) == 2  # skip all of term 2
    assert log.maybe_append(2, 1, 4, tuple(entries(3, start=3))) == 3
    assert log.last_index() == 3 and log.committed == 3
    with pytest.raises(InvariantViolation):
        log.commit_to(9)


def test_log_restore_and_committed_entries() -> None:
    log = RaftLog(storage_with(1, 1), committed=2, applied=0)
    assert [e.index for e in log.next_committed_entries(1 << 20)] == [1, 2]
    assert log.next_committed_entries(1 << 20) == [], "handed out once"
    log.restore(SnapshotMeta(index=9, term=4))
    assert (log.first_index(), log.last_index(), log.committed) == (10, 9, 9)
    with pytest.raises(CompactedError):
        log.term(5)
    assert log.next_unstable_snapshot() == SnapshotMeta(index=9, term=4)


# --- Progress ---------------------------------------------------------------------------


def test_progress_probe_backs_off_with_hint_and_ignores_stale_rejections() -> None:
    progress = Progress(next_index=11, max_inflight=4)
    assert not progress.maybe_decrease_to(5, 3), "not the probe we sent (next - 1 = 10)"
    assert progress.maybe_decrease_to(10, 6) and progress.next == 7
    progress.sent_entries(9)
    assert progress.is_paused(), "one probe at a time"


def test_progress_replicate_window_and_snapshot_exit() -> None:
    progress = Progress(next_index=1, max_inflight=2)
    progress.maybe_update(3)
    progress.become_replicate()
    progress.sent_entries(5)
    progress.sent_entries(7)
    assert progress.is_paused() and progress.next == 8
    progress.inflights.free_le(5)
    assert not progress.is_paused()
    progress.become_snapshot(20)
    assert progress.is_paused() and progress.state is ProgressState.SNAPSHOT
    progress.become_probe()
    assert progress.next == 21, "probe right after the snapshot sent"


@pytest.mark.parametrize("voter_count", [1, 2, 3, 4, 5])
def test_tracker_committed_index_is_the_quorum_th_highest_match(voter_count: int) -> None:
    # The 1- and 3-voter shortcuts must agree with the definition, every
    # ordering of matches included (ties too).
    voters = tuple("abcde"[:voter_count])
    tracker = ProgressTracker(ConfState(voters=voters), max_inflight=4)
    for matches in itertools.product(range(3), repeat=voter_count):
        for node_id, match in zip(voters, matches, strict=True):
            tracker.progress[node_id].match = match
        expected = sorted(matches, reverse=True)[voter_count // 2]
        assert tracker.committed_index() == expected, matches


def test_tracker_quorum_ignores_learners() -> None:
    tracker = ProgressTracker(ConfState(voters=("a", "b", "c"), learners=("d",)), max_inflight=4)
    for node_id, match in {"a": 5, "b": 3, "c": 1, "d": 9}.items():
        tracker.progress[node_id].match = match
    assert tracker.committed_index() == 3
    tracker.record_vote("d", True)
    tracker.record_vote("a", True)
    assert tracker.tally_votes() is VoteResult.PENDING
    tracker.record_vote("b", False)
    tracker.record_vote("c", False)
    assert tracker.tally_votes() is VoteResult.LOST
