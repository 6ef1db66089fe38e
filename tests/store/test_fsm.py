"""The state machine's rules, applied through WriteBatch on a real LevelDB."""

from __future__ import annotations

import orjson
from fsm_harness import FsmHarness, append, text, upsert

from fastpaca.raft.kv import LevelDBKV, WriteBatch
from fastpaca.raft.messages import Entry, EntryType
from fastpaca.store.commands import (
    AckArchived,
    TombstoneConversation,
    encode_command,
)
from fastpaca.store.effects import Appended, Tombstoned
from fastpaca.store.results import (
    AppendApplied,
    ArchiveAcked,
    ConversationApplied,
    Rejected,
    RejectReason,
    TombstoneApplied,
)

CID = "support-123"


def test_upsert_creates_then_updates_and_keeps_metadata(harness: FsmHarness) -> None:
    created = harness.apply_one(upsert(metadata={"a": 1}, now_ms=1_000))
    assert isinstance(created, ConversationApplied) and created.created
    assert orjson.loads(created.metadata_json) == {"a": 1}
    kept = harness.apply_one(upsert(now_ms=5_000))
    assert isinstance(kept, ConversationApplied) and not kept.created
    assert orjson.loads(kept.metadata_json) == {"a": 1}
    replaced = harness.apply_one(upsert(metadata={"b": 2}, now_ms=6_000))
    assert orjson.loads(replaced.metadata_json) == {"b": 2}
    assert replaced.state.created_ms == 1_000 and replaced.state.updated_ms == 6_000
    view = harness.reader.conversation(0, CID)
    assert view is not None and orjson.loads(view.metadata_json) == {"b": 2}


def test_new_conversation_without_metadata_gets_empty_object(harness: FsmHarness) -> None:
    result = harness.apply_one(upsert())
    assert result.metadata_json == b"{}"
    assert result.state.version == 0 and result.state.last_seq == 0


def test_append_to_unknown_conversation_is_not_found(harness: FsmHarness) -> None:
    result = harness.apply_one(append(text("hi")))
    assert result == Rejected(reason=RejectReason.NOT_FOUND)


def test_seq_and_version_advance_per_message_and_per_append(harness: FsmHarness) -> None:
    harness.apply_one(upsert())
    first = harness.apply_one(append(text("one")))
    batch = harness.apply_one(append(text("two"), text("three"), batch=True))
    assert isinstance(first, AppendApplied) and isinstance(batch, AppendApplied)
    assert [(i.seq, i.version) for i in first.items] == [(1, 1)]
    # One version bump per append: every item of a batch carries the new version.
    assert [(i.seq, i.version) for i in batch.items] == [(2, 2), (3, 2)]
    view = harness.reader.conversation(0, CID)
    assert view is not None and (view.state.version, view.state.last_seq) == (2, 3)
    stored = harness.reader.replay(0, CID, 3, from_seq=0, limit=10)
    assert [m.seq for m in stored] == [1, 2, 3]
    assert [orjson.loads(m.body)["parts"][0]["text"] for m in stored] == ["one", "two", "three"]


def test_token_count_is_estimated_from_text_bytes(harness: FsmHarness) -> None:
    harness.apply_one(upsert())
    result = harness.apply_one(append(text("é" * 10), text("abc", tokens=7), batch=True))
    assert [i.token_count for i in result.items] == [5, 7]  # 20 UTF-8 bytes / 4


def test_if_version_guards_appends(harness: FsmHarness) -> None:
    harness.apply_one(upsert())
    harness.apply_one(append(text("a")))
    refused = harness.apply_one(append(text("b"), if_version=0))
    assert refused == Rejected(reason=RejectReason.VERSION_MISMATCH, current_version=1)
    accepted = harness.apply_one(append(text("b"), if_version=1))
    assert accepted.items[0].seq == 2


def test_idempotent_retry_returns_original_reply_and_appends_nothing(harness: FsmHarness) -> None:
    harness.apply_one(upsert())
    original = harness.apply_one(append(text("a"), key="k1", now_ms=10))
    retry = harness.apply_one(append(text("a"), key="k1", now_ms=99))
    assert retry == AppendApplied(items=original.items, deduped=True)
    view = harness.reader.conversation(0, CID)
    assert view is not None and view.state.last_seq == 1


def test_key_is_checked_before_if_version(harness: FsmHarness) -> None:
    harness.apply_one(upsert())
    harness.apply_one(append(text("a"), key="k1", if_version=0))
    harness.apply_one(append(text("b")))
    retry = harness.apply_one(append(text("a"), key="k1", if_version=0))
    assert isinstance(retry, AppendApplied) and retry.deduped


def test_same_key_with_different_message_conflicts(harness: FsmHarness) -> None:
    harness.apply_one(upsert())
    harness.apply_one(append(text("a"), key="k1"))
    assert (
        harness.apply_one(append(text("other"), key="k1")).reason
        is RejectReason.IDEMPOTENCY_CONFLICT
    )
    # A batch of the same one message is a different request.
    assert (
        harness.apply_one(append(text("a"), key="k1", batch=True)).reason
        is RejectReason.IDEMPOTENCY_CONFLICT
    )


def test_keys_are_per_conversation(harness: FsmHarness) -> None:
    harness.apply(upsert("a"), upsert("b"))
    harness.apply_one(append(text("x"), cid="a", key="k"))
    other = harness.apply_one(append(text("x"), cid="b", key="k"))
    assert not other.deduped and other.items[0].seq == 1


def test_entries_of_one_batch_see_each_other(harness: FsmHarness) -> None:
    results = harness.apply(
        upsert(), append(text("a"), key="k"), append(text("a"), key="k"), append(text("b"))
    )
    assert results[1].items[0].seq == 1
    assert results[2].deduped and results[2].items[0].seq == 1
    assert results[3].items[0].seq == 2


def test_tombstone_is_permanent_and_refuses_writes(harness: FsmHarness) -> None:
    harness.apply(upsert(), append(text("a")))
    assert isinstance(
        harness.apply_one(TombstoneConversation(conversation_id=CID, now_ms=3)), TombstoneApplied
    )
    assert harness.apply_one(
        TombstoneConversation(conversation_id=CID, now_ms=4)
    ) == TombstoneApplied(conversation_id=CID)
    assert harness.apply_one(append(text("b"))).reason is RejectReason.TOMBSTONED
    assert harness.apply_one(upsert(metadata={"x": 1})).reason is RejectReason.TOMBSTONED
    view = harness.reader.conversation(0, CID)
    assert view is not None and view.state.tombstoned and view.state.last_seq == 1
    # Only the first tombstone is an event.
    assert [e for e in harness.effects if isinstance(e, Tombstoned)] == [
        Tombstoned(conversation_id=CID)
    ]


def test_tombstone_of_unknown_is_not_found(harness: FsmHarness) -> None:
    result = harness.apply_one(TombstoneConversation(conversation_id="nope", now_ms=1))
    assert result.reason is RejectReason.NOT_FOUND


def test_effects_carry_seq_version_and_stored_message(harness: FsmHarness) -> None:
    harness.apply(upsert(), append(text("a"), text("b"), batch=True))
    appended = [e for e in harness.effects if isinstance(e, Appended)]
    assert [(e.seq, e.version) for e in appended] == [(1, 1), (2, 1)]
    assert orjson.loads(appended[1].message)["parts"] == [{"type": "text", "text": "b"}]


def test_refused_batch_writes_nothing(harness: FsmHarness) -> None:
    harness.apply(upsert(), append(text("a")))
    refused = harness.apply_one(append(text("b"), text("c"), batch=True, if_version=7))
    assert refused.reason is RejectReason.VERSION_MISMATCH
    assert [m.seq for m in harness.reader.replay(0, CID, 10, from_seq=1, limit=10)] == [1]


def test_applied_index_is_stored_and_old_entries_are_skipped(kv: LevelDBKV) -> None:
    harness = FsmHarness(kv)
    harness.apply(upsert(), append(text("a")))
    assert harness.fsm.applied_index(0) == 2
    # The driver re-applying an already applied entry changes nothing.
    batch = WriteBatch(kv)
    again = harness.fsm.apply(0, [Entry(index=2, term=1, data=b"garbage")], batch)
    assert again == [None]
    # No-op and conf-change entries only move the applied index.
    noop = harness.fsm.apply(
        0,
        [Entry(index=3, term=2), Entry(index=4, term=2, type=EntryType.CONF_CHANGE, data=b"{}")],
        batch,
    )
    kv.write(batch, sync=False)
    assert noop == [None, None] and harness.fsm.applied_index(0) == 4


def test_undecodable_command_is_refused_deterministically(harness: FsmHarness) -> None:
    batch = WriteBatch(harness.kv)
    result = harness.fsm.apply(0, [Entry(index=1, term=1, data=b"Zjunk")], batch)
    assert isinstance(result[0], Rejected) and result[0].reason is RejectReason.BAD_COMMAND


def test_ack_archived_moves_forward_within_last_seq(harness: FsmHarness) -> None:
    harness.apply(upsert(), append(text("a"), text("b"), text("c"), batch=True))
    assert harness.apply_one(AckArchived(conversation_id=CID, upto_seq=2)) == ArchiveAcked(
        archived_seq=2
    )
    assert harness.apply_one(AckArchived(conversation_id=CID, upto_seq=1)) == ArchiveAcked(
        archived_seq=2
    )
    assert harness.apply_one(AckArchived(conversation_id=CID, upto_seq=99)) == ArchiveAcked(
        archived_seq=3
    )


def test_old_idempotency_keys_are_evicted_after_the_window(kv: LevelDBKV) -> None:
    harness = FsmHarness(kv, window=3)
    harness.apply_one(upsert())
    for n in range(1, 7):
        harness.apply_one(append(text(str(n)), key=f"k{n}"))
    # Window 3 at version 6: keys of versions 4..6 are kept for sure.
    for n in (4, 5, 6):
        assert harness.apply_one(append(text(str(n)), key=f"k{n}")).deduped
    # The sweep at version 5 dropped keys of versions below 3: a reuse is new.
    fresh = harness.apply_one(append(text("1"), key="k1"))
    assert not fresh.deduped and fresh.items[0].seq == 7


def test_tail_and_replay_paging(harness: FsmHarness) -> None:
    harness.apply_one(upsert())
    harness.apply_one(append(*[text(str(n)) for n in range(1, 11)], batch=True))
    reader = harness.reader
    assert [m.seq for m in reader.tail(0, CID, 10, limit=3, offset=0)] == [8, 9, 10]
    assert [m.seq for m in reader.tail(0, CID, 10, limit=3, offset=8)] == [1, 2]
    assert reader.tail(0, CID, 10, limit=3, offset=10) == []
    assert [m.seq for m in reader.replay(0, CID, 10, from_seq=9, limit=5)] == [9, 10]
    assert [m.seq for m in reader.replay(0, CID, 10, from_seq=0, limit=2)] == [1, 2]
    assert reader.replay(0, CID, 10, from_seq=11, limit=5) == []


def test_groups_are_isolated(kv: LevelDBKV) -> None:
    g1, g2 = FsmHarness(kv, group_id=1), FsmHarness(kv, group_id=2)
    g1.apply(upsert(), append(text("a")))
    assert g2.reader.conversation(2, CID) is None
    assert g2.apply_one(append(text("a"))).reason is RejectReason.NOT_FOUND


def test_restore_from_an_older_snapshot_replaces_what_the_apply_path_remembered(
    kv: LevelDBKV,
) -> None:
    """The apply path keeps the applied index and recent conversation states
    in memory; a snapshot install (or a group's removal) must leave no trace
    of the state it replaced."""
    harness = FsmHarness(kv)
    harness.apply(upsert(), append(text("one")))  # indexes 1, 2: version 1
    snapshot = harness.fsm.snapshot(0)
    chunks = list(snapshot.chunks(64 * 1024))
    assert snapshot.applied_index == 2
    harness.apply(append(text("two")), append(text("three")))  # versions 2 and 3, index 4

    batch = WriteBatch(kv)
    harness.fsm.restore(0, 2, chunks, batch)  # back to version 1, applied index 2
    kv.write(batch, sync=False)
    assert harness.fsm.applied_index(0) == 2

    batch = WriteBatch(kv)
    entry = Entry(index=3, term=2, data=encode_command(append(text("again"))))
    (result,) = harness.fsm.apply(0, [entry], batch)  # index 3 again: applied, not skipped
    kv.write(batch, sync=False)
    assert isinstance(result, AppendApplied)
    assert [(i.seq, i.version) for i in result.items] == [(2, 2)]

    batch = WriteBatch(kv)
    harness.fsm.restore(0, 0, (), batch)  # the group removed from this node
    kv.write(batch, sync=False)
    batch = WriteBatch(kv)
    (gone,) = harness.fsm.apply(0, [Entry(index=1, term=3, data=entry.data)], batch)
    assert gone == Rejected(reason=RejectReason.NOT_FOUND)


def test_tombstone_and_archive_ack_are_seen_by_the_next_append(harness: FsmHarness) -> None:
    harness.apply(upsert(), append(text("a")), append(text("b")))
    ack = harness.apply_one(AckArchived(conversation_id=CID, upto_seq=1))
    assert isinstance(ack, ArchiveAcked)
    (appended,) = harness.apply(append(text("c")))
    assert isinstance(appended, AppendApplied) and appended.items[0].seq == 3
    state = harness.reader.state(0, CID)
    assert state is not None and state.archived_seq == 1 and state.version == 3
    harness.apply_one(TombstoneConversation(conversation_id=CID, now_ms=3_000))
    refused = harness.apply_one(append(text("d")))
    assert isinstance(refused, Rejected) and refused.reason is RejectReason.TOMBSTONED
