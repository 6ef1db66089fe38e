"""The key layout: the keys an append writes (``ConversationKeys``) fall in the
ranges that reads, trims and evictions scan, and never in another
conversation's or group's."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fastpaca.store import keys

group_ids = st.integers(min_value=0, max_value=0xFFFE)
conversation_ids = st.text(min_size=1, max_size=40)
counters = st.integers(min_value=1, max_value=keys.SEQ_MAX - 1)


@given(group_ids, conversation_ids, counters)
def test_message_keys_fall_in_their_conversations_range(group: int, cid: str, seq: int) -> None:
    key = keys.ConversationKeys(group, cid).message(seq)
    assert key == keys.message_key(group, cid, seq)
    assert keys.seq_of_message_key(key) == seq
    lo, hi = keys.message_range(group, cid, seq, seq + 1)
    assert lo <= key < hi
    everything_lo, everything_hi = keys.message_range(group, cid, 1, keys.SEQ_MAX + 1)
    assert everything_lo <= key < everything_hi
    other_lo, other_hi = keys.message_range(group, cid + "x", 1, keys.SEQ_MAX + 1)
    assert not other_lo <= key < other_hi
    group_lo, group_hi = keys.group_range(group)
    assert group_lo <= key < group_hi


@given(group_ids, conversation_ids, counters, st.text(min_size=1, max_size=20))
def test_idempotency_keys_and_their_index(group: int, cid: str, version: int, key: str) -> None:
    conversation = keys.ConversationKeys(group, cid)
    assert conversation.idempotency(key) == keys.idempotency_key(group, cid, key)
    index_key = conversation.idempotency_index(version)
    assert index_key == keys.idempotency_index_key(group, cid, version)
    lo, hi = keys.idempotency_index_range(group, cid, version, version + 1)
    assert lo <= index_key < hi
    before_lo, before_hi = keys.idempotency_index_range(group, cid, 0, version)
    assert not before_lo <= index_key < before_hi


@given(group_ids, conversation_ids)
def test_the_counters_key_names_its_conversation(group: int, cid: str) -> None:
    key = keys.ConversationKeys(group, cid).state()
    assert key == keys.conversation_key(group, cid)
    assert keys.conversation_id_of_key(key) == cid
    lo, hi = keys.conversation_range(group)
    assert lo <= key < hi
