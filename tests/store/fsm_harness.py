"""Applies commands to the real state machine as the Raft driver would."""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from fastpaca.raft.kv import LevelDBKV, WriteBatch
from fastpaca.raft.messages import Entry
from fastpaca.store.commands import (
    AppendMessages,
    Command,
    UpsertConversation,
    encode_command,
)
from fastpaca.store.effects import Effect
from fastpaca.store.fsm import ConversationStateMachine
from fastpaca.store.messages import NewMessage, build_append
from fastpaca.store.reads import StoreReader


class FsmHarness:
    """Applies commands as committed entries of one group, one WriteBatch per
    call, exactly as the driver does."""

    def __init__(self, kv: LevelDBKV, *, window: int = 10_000, group_id: int = 0) -> None:
        self.kv = kv
        self.group_id = group_id
        self.effects: list[Effect] = []
        self.fsm = ConversationStateMachine(
            kv,
            effect_sink=lambda _group, effects: self.effects.extend(effects),
            idempotency_window_appends=window,
        )
        self.reader = StoreReader(kv)
        self._index = itertools.count(self.fsm.applied_index(group_id) + 1)

    def apply(self, *commands: Command) -> list[Any]:
        batch = WriteBatch(self.kv)
        entries = [Entry(index=next(self._index), term=1, data=encode_command(c)) for c in commands]
        results = self.fsm.apply(self.group_id, entries, batch)
        self.kv.write(batch, sync=False)
        return results

    def apply_one(self, command: Command) -> Any:
        return self.apply(command)[0]


CID = "support-123"


def upsert(
    cid: str = CID, metadata: dict[str, object] | None = None, now_ms: int = 1_000
) -> UpsertConversation:
    meta = None if metadata is None else orjson.dumps(metadata)
    return UpsertConversation(conversation_id=cid, metadata_json=meta, now_ms=now_ms)


def text(body: str, role: str = "user", tokens: int | None = None) -> NewMessage:
    return NewMessage(
        role=role, parts=[{"type": "text", "text": body}], metadata={}, token_count=tokens
    )


def append(
    *messages: NewMessage,
    cid: str = CID,
    key: str | None = None,
    if_version: int | None = None,
    batch: bool = False,
    now_ms: int = 2_000,
) -> AppendMessages:
    command, _ = build_append(
        cid, messages, now_ms=now_ms, is_batch=batch, if_version=if_version, idempotency_key=key
    )
    return command
