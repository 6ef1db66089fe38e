"""Applying ``AckArchived``: the watermark and the trim are decided by the
replicated command alone, so replicas with different settings, and a replica
restored from a snapshot, end with the same state."""

from __future__ import annotations

import itertools
from pathlib import Path

from fastpaca.raft.kv import LevelDBKV, WriteBatch
from fastpaca.raft.messages import Entry
from fastpaca.store import keys
from fastpaca.store.commands import (
    AckArchived,
    Command,
    UpsertConversation,
    decode_command,
    encode_command,
)
from fastpaca.store.fsm import ConversationStateMachine
from fastpaca.store.messages import NewMessage, build_append
from fastpaca.store.results import ArchiveAcked

CID = "trim-me"
GROUP = 0


class Replica:
    def __init__(self, path: Path) -> None:
        self.kv = LevelDBKV(str(path))
        self.fsm = ConversationStateMachine(self.kv)
        self._index = itertools.count(1)

    def apply(self, *commands: Command) -> list[object]:
        batch = WriteBatch(self.kv)
        entries = [Entry(index=next(self._index), term=1, data=encode_command(c)) for c in commands]
        results = self.fsm.apply(GROUP, entries, batch)
        self.kv.write(batch, sync=False)
        return results

    def seqs(self) -> list[int]:
        start, stop = keys.message_range(GROUP, CID, 0, keys.SEQ_MAX + 1)
        return [keys.seq_of_message_key(key) for key, _ in self.kv.iterate(start, stop)]

    def group_state(self) -> list[tuple[bytes, bytes]]:
        start, stop = keys.group_range(GROUP)
        return list(self.kv.iterate(start, stop))


def _appends(count: int) -> list[Command]:
    commands: list[Command] = [
        UpsertConversation(conversation_id=CID, metadata_json=None, now_ms=1)
    ]
    for index in range(count):
        message = NewMessage(role="user", parts=[{"type": "text", "text": str(index)}], metadata={})
        command, _ = build_append(CID, [message], now_ms=2, is_batch=False)
        commands.append(command)
    return commands


def test_ack_trims_archived_messages_beyond_the_newest_tail_keep(tmp_path: Path) -> None:
    replica = Replica(tmp_path / "r")
    replica.apply(*_appends(10))
    # Archived up to 4, keep 3: 1..4 go (the newest 3 are 8..10 anyway).
    assert replica.apply(AckArchived(conversation_id=CID, upto_seq=4, tail_keep=3)) == [
        ArchiveAcked(archived_seq=4, trimmed=4)
    ]
    assert replica.seqs() == list(range(5, 11))
    # Archived up to 10, keep 3: 5..7 go; 8..10 stay although archived.
    assert replica.apply(AckArchived(conversation_id=CID, upto_seq=10, tail_keep=3)) == [
        ArchiveAcked(archived_seq=10, trimmed=3)
    ]
    assert replica.seqs() == [8, 9, 10]
    # A repeated or older ack trims nothing more; no tail_keep never trims.
    assert replica.apply(AckArchived(conversation_id=CID, upto_seq=10, tail_keep=3)) == [
        ArchiveAcked(archived_seq=10, trimmed=0)
    ]
    assert replica.apply(AckArchived(conversation_id=CID, upto_seq=10)) == [
        ArchiveAcked(archived_seq=10, trimmed=0)
    ]
    assert replica.seqs() == [8, 9, 10]
    # tail_keep 0 (carried by a later ack) trims everything archived.
    assert replica.apply(AckArchived(conversation_id=CID, upto_seq=10, tail_keep=0)) == [
        ArchiveAcked(archived_seq=10, trimmed=3)
    ]
    assert replica.seqs() == []


def test_replicas_applying_the_same_acks_hold_the_same_bytes(tmp_path: Path) -> None:
    first, second = Replica(tmp_path / "a"), Replica(tmp_path / "b")
    commands = [
        *_appends(20),
        AckArchived(conversation_id=CID, upto_seq=7, tail_keep=5),
        AckArchived(conversation_id=CID, upto_seq=19, tail_keep=5),
    ]
    for command in commands:  # one entry per apply on one replica, ...
        first.apply(command)
    second.apply(*commands)  # ... all in one apply on the other
    assert first.group_state() == second.group_state()
    assert first.seqs() == list(range(16, 21))


def test_ack_codec_round_trips_tail_keep_and_accepts_acks_without_it() -> None:
    for command in (
        AckArchived(conversation_id="x", upto_seq=9, tail_keep=1000),
        AckArchived(conversation_id="x", upto_seq=9, tail_keep=0),
        AckArchived(conversation_id="x", upto_seq=9),
    ):
        assert decode_command(encode_command(command)) == command
