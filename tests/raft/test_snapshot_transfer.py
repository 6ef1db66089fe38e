"""Snapshot transfer bookkeeping: chunk order, senders, timeouts, pacing."""

from __future__ import annotations

from fastpaca.raft.codec import SnapshotChunk
from fastpaca.raft.kv import MemoryKV, WriteBatch
from fastpaca.raft.messages import ConfState, Message, MessageType, SnapshotMeta
from fastpaca.raft.snapshot_transfer import SnapshotReceiver, SnapshotSender


def _chunk(seq: int, *, last: bool = False, index: int = 9, group_id: int = 1) -> SnapshotChunk:
    return SnapshotChunk(
        group_id=group_id, term=2, snapshot_index=index, seq=seq, is_last=last, data=b"d"
    )


def _snapshot_message(to: str = "n2", index: int = 9) -> Message:
    meta = SnapshotMeta(index=index, term=2, conf_state=ConfState(voters=("n1", "n2")))
    return Message(type=MessageType.SNAPSHOT, group_id=1, sender="n1", to=to, term=2, snapshot=meta)


def test_sender_sends_one_chunk_per_iteration_and_the_message_with_the_last() -> None:
    sender = SnapshotSender(timeout_ticks=5)
    sender.start(_snapshot_message(), iter([b"a", b"b", b"c"]))
    sent = []
    while sender.has_chunks_to_send():
        ((peer, chunk, message),) = sender.next_chunks()
        sent.append((peer, chunk.seq, chunk.data, chunk.is_last, message is not None))
    assert sent == [
        ("n2", 0, b"a", False, False),
        ("n2", 1, b"b", False, False),
        ("n2", 2, b"c", True, True),
    ]
    assert sender.next_chunks() == []
    assert not sender.finish(1, "n2", 8)  # another snapshot's answer
    assert sender.finish(1, "n2", 9)


def test_empty_state_is_one_empty_last_chunk() -> None:
    sender = SnapshotSender(timeout_ticks=5)
    sender.start(_snapshot_message(), iter([]))
    ((_, chunk, message),) = sender.next_chunks()
    assert (chunk.data, chunk.is_last, message is not None) == (b"", True, True)


def test_sender_gives_up_on_a_silent_follower_and_on_a_lost_peer() -> None:
    sender = SnapshotSender(timeout_ticks=2)
    sender.start(_snapshot_message("n2"), iter([b"x"]))
    sender.start(_snapshot_message("n3"), iter([b"x"]))
    sender.next_chunks()
    assert sender.drop_peer("n3") == [1]
    assert sender.tick() == [] and sender.tick() == []
    assert sender.tick() == [(1, "n2")]
    assert not sender.finish(1, "n2", 9)


def test_receiver_accepts_chunks_in_order_only() -> None:
    receiver = SnapshotReceiver(timeout_ticks=5)
    assert receiver.accept_chunk("n1", _chunk(0)) == (True, False)
    assert receiver.accept_chunk("n1", _chunk(2)) == (False, True)  # gap: abandoned
    assert 1 not in receiver.transfers
    assert receiver.accept_chunk("n1", _chunk(0)) == (True, False)
    assert receiver.accept_chunk("n3", _chunk(1)) == (False, True)  # wrong sender
    assert receiver.accept_chunk("n1", _chunk(0)) == (True, False)
    assert receiver.accept_chunk("n1", _chunk(1, last=True)) == (True, False)
    assert receiver.complete_for(1, "n1", 9) is not None
    assert receiver.complete_for(1, "n1", 10) is None
    assert receiver.accept_chunk("n1", _chunk(2)) == (False, True)  # after the last


def test_restarted_transfer_replaces_the_old_one() -> None:
    receiver = SnapshotReceiver(timeout_ticks=5)
    receiver.accept_chunk("n1", _chunk(0, index=9))
    assert receiver.accept_chunk("n1", _chunk(0, index=12)) == (True, True)
    assert receiver.transfers[1].snapshot_index == 12


def test_receiver_times_out_stalled_transfers_but_not_one_the_core_holds() -> None:
    receiver = SnapshotReceiver(timeout_ticks=1)
    receiver.accept_chunk("n1", _chunk(0, group_id=1))
    receiver.accept_chunk("n1", _chunk(0, last=True, group_id=2))
    held = receiver.complete_for(2, "n1", 9)
    assert held is not None
    held.restored = WriteBatch(MemoryKV())
    assert receiver.tick() == []
    assert receiver.tick() == [1]
    assert list(receiver.transfers) == [2]
    # While the core holds it, new chunks for that group are refused.
    assert receiver.accept_chunk("n1", _chunk(0, group_id=2)) == (False, False)
