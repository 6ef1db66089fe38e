"""The conversation state machine: deterministic apply of committed commands.

Owns the rules of DESIGN section 1 (seq without holes, version per append,
``if_version``, idempotency keys, atomic batches, tombstones) as they apply to
the replicated state. It reads through and writes only into the ``WriteBatch``
the driver passes (read-your-writes lets entries of one batch see each other),
never reads a clock or a random source, and performs no IO of its own: its
effects are returned to an ``EffectSink``, not performed.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from fastpaca.errors import InvariantViolation
from fastpaca.raft.codec import CodecError
from fastpaca.raft.kv import KV, WriteBatch
from fastpaca.raft.messages import Entry, EntryType
from fastpaca.store import keys
from fastpaca.store.commands import (
    AckArchived,
    AppendMessages,
    Command,
    TombstoneConversation,
    UpsertConversation,
    decode_command,
)
from fastpaca.store.effects import Appended, Effect, EffectSink, Tombstoned
from fastpaca.store.results import (
    AppendApplied,
    AppendedItem,
    ArchiveAcked,
    ConversationApplied,
    Rejected,
    RejectReason,
    TombstoneApplied,
)
from fastpaca.store.snapshot import GroupSnapshot, restore_group
from fastpaca.store.state import ConversationState, IdempotencyRecord

__all__ = ["IDEMPOTENCY_WINDOW_APPENDS", "ConversationStateMachine"]

IDEMPOTENCY_WINDOW_APPENDS = 10_000
"""Idempotency keys of at least this many latest appends per conversation are kept."""

_STATE_CACHE_ENTRIES = 16_384
"""Conversation states kept in memory by the apply path (~3 MB at most)."""
_U64 = struct.Struct(">Q")
_log = logging.getLogger(__name__)

ApplyResult = AppendApplied | ConversationApplied | TombstoneApplied | ArchiveAcked | Rejected


class ConversationStateMachine:
    """``raft.statemachine.StateMachine`` for every group of one node."""

    def __init__(
        self,
        kv: KV,
        *,
        effect_sink: EffectSink | None = None,
        idempotency_window_appends: int = IDEMPOTENCY_WINDOW_APPENDS,
    ) -> None:
        self._kv = kv
        self._effect_sink = effect_sink
        self._window = idempotency_window_appends
        # What this instance last staged, so the hot path reads no LevelDB:
        # a group's applied index, and the state of recently appended-to
        # conversations. Both are exactly what the batch holds: every write
        # of either goes through this object (restore clears them), and a
        # batch that fails to write ends the node (``NodeHost.abort``), so no
        # staged value outlives its batch.
        self._applied: dict[int, int] = {}
        self._states: dict[bytes, ConversationState] = {}

    def set_effect_sink(self, sink: EffectSink | None) -> None:
        self._effect_sink = sink

    def applied_index(self, group_id: int) -> int:
        raw = self._kv.get(keys.applied_index_key(group_id))
        return 0 if raw is None else int(_U64.unpack(raw)[0])

    def apply(self, group_id: int, entries: Sequence[Entry], batch: WriteBatch) -> list[Any]:
        """One result per entry; entries at or below the applied index are
        skipped (``None``) so a repeated apply after a crash changes nothing."""
        if not entries:
            return []
        applied_key = keys.applied_index_key(group_id)
        applied = self._applied.get(group_id)
        if applied is None:
            raw_applied = batch.get(applied_key)
            applied = 0 if raw_applied is None else int(_U64.unpack(raw_applied)[0])
        results: list[Any] = []
        effects: list[Effect] = []
        for entry in entries:
            if entry.index <= applied:
                results.append(None)
                continue
            if entry.index != applied + 1:
                raise InvariantViolation(
                    f"group {group_id}: apply of index {entry.index} after {applied}"
                )
            applied = entry.index
            if entry.type != EntryType.NORMAL or not entry.data:
                results.append(None)
                continue
            results.append(self._apply_data(group_id, entry, batch, effects))
        batch.put(applied_key, _U64.pack(applied))
        self._applied[group_id] = applied
        if effects and self._effect_sink is not None:
            self._effect_sink(group_id, effects)
        return results

    def snapshot(self, group_id: int) -> GroupSnapshot:
        view = self._kv.snapshot()
        raw = view.get(keys.applied_index_key(group_id))
        applied = 0 if raw is None else int(_U64.unpack(raw)[0])
        return GroupSnapshot(view=view, group_id=group_id, applied_index=applied)

    def restore(
        self, group_id: int, applied_index: int, chunks: Iterable[bytes], batch: WriteBatch
    ) -> None:
        restore_group(group_id, chunks, batch)
        batch.put(keys.applied_index_key(group_id), _U64.pack(applied_index))
        self._applied[group_id] = applied_index
        self._states.clear()  # rare (a snapshot installed, a group removed): drop them all

    def _apply_data(
        self, group_id: int, entry: Entry, batch: WriteBatch, effects: list[Effect]
    ) -> ApplyResult:
        try:
            command = decode_command(entry.data)
        except CodecError as exc:
            # Deterministic on every replica: the entry is refused, not applied.
            _log.error(
                "undecodable command refused",
                extra={"type": "fsm.bad_command", "group_id": group_id, "index": entry.index},
            )
            return Rejected(reason=RejectReason.BAD_COMMAND, detail=str(exc))
        return self._apply_command(group_id, command, batch, effects)

    def _apply_command(
        self, group_id: int, command: Command, batch: WriteBatch, effects: list[Effect]
    ) -> ApplyResult:
        if not isinstance(command, AppendMessages):  # they change states on their own
            self._states.pop(keys.conversation_key(group_id, command.conversation_id), None)
        match command:
            case AppendMessages():
                return self._append(group_id, command, batch, effects)
            case UpsertConversation():
                return _upsert(group_id, command, batch)
            case TombstoneConversation():
                return _tombstone(group_id, command, batch, effects)
            case AckArchived():
                return _ack_archived(group_id, command, batch)

    def _append(
        self, group_id: int, command: AppendMessages, batch: WriteBatch, effects: list[Effect]
    ) -> AppendApplied | Rejected:
        conversation_id = command.conversation_id
        conversation_keys = keys.ConversationKeys(group_id, conversation_id)
        state_key = conversation_keys.state()
        state = self._states.get(state_key)
        if state is None:
            state = _load_state(batch, state_key)
            if state is None:
                return Rejected(reason=RejectReason.NOT_FOUND)
        if state.tombstoned:
            return Rejected(reason=RejectReason.TOMBSTONED, current_version=state.version)
        key = command.idempotency_key
        # DESIGN: the key is checked before if_version, so an identical retry
        # of a guarded append is answered, not refused.
        if key is not None:
            record_key = conversation_keys.idempotency(key)
            raw = batch.get(record_key)
            if raw is not None:
                return _answer_retry(IdempotencyRecord.decode(raw), command, state)
        if command.if_version is not None and command.if_version != state.version:
            return Rejected(reason=RejectReason.VERSION_MISMATCH, current_version=state.version)

        version = state.version + 1
        first_seq = state.last_seq + 1
        items = []
        for offset, (message, tokens) in enumerate(
            zip(command.messages, command.token_counts, strict=True)
        ):
            seq = first_seq + offset
            batch.put(conversation_keys.message(seq), message)
            items.append(AppendedItem(seq=seq, version=version, token_count=tokens))
            effects.append(
                Appended(conversation_id=conversation_id, seq=seq, version=version, message=message)
            )
        if key is not None:
            record = IdempotencyRecord(
                request_digest=command.request_digest,
                first_seq=first_seq,
                version=version,
                token_counts=command.token_counts,
            )
            batch.put(record_key, record.encode())
            batch.put(conversation_keys.idempotency_index(version), key.encode())
        floor = self._evict_idempotency_keys(group_id, conversation_id, state, version, batch)
        # Built directly, not with dataclasses.replace: this is the hot path.
        new_state = ConversationState(
            version=version,
            last_seq=first_seq + len(items) - 1,
            archived_seq=state.archived_seq,
            idempotency_floor_version=floor,
            created_ms=state.created_ms,
            updated_ms=max(state.updated_ms, command.now_ms),
            tombstoned=False,
        )
        batch.put(state_key, new_state.encode())
        states = self._states
        if len(states) >= _STATE_CACHE_ENTRIES and state_key not in states:
            states.clear()  # crude but O(1) amortized; the busy ones come back at once
        states[state_key] = new_state
        return AppendApplied(items=tuple(items))

    def _evict_idempotency_keys(
        self,
        group_id: int,
        conversation_id: str,
        state: ConversationState,
        version: int,
        batch: WriteBatch,
    ) -> int:
        """Drop keys of appends older than the window, in one sweep every
        ``window`` appends so the range scan is amortized. Keys of the newest
        ``window`` appends are always kept; at most ``2 * window`` are stored.
        Returns the new floor version."""
        keep_from_version = version - self._window + 1
        floor = state.idempotency_floor_version
        if keep_from_version - floor < self._window:
            return floor
        start, stop = keys.idempotency_index_range(
            group_id, conversation_id, floor, keep_from_version
        )
        for index_key, key_bytes in list(batch.iterate(start, stop)):
            batch.delete(index_key)
            batch.delete(keys.idempotency_key(group_id, conversation_id, key_bytes.decode()))
        return keep_from_version


def _load_state(batch: WriteBatch, state_key: bytes) -> ConversationState | None:
    raw = batch.get(state_key)
    return None if raw is None else ConversationState.decode(raw)


def _answer_retry(
    record: IdempotencyRecord, command: AppendMessages, state: ConversationState
) -> AppendApplied | Rejected:
    if record.request_digest != command.request_digest:
        return Rejected(reason=RejectReason.IDEMPOTENCY_CONFLICT, current_version=state.version)
    items = tuple(
        AppendedItem(seq=record.first_seq + offset, version=record.version, token_count=tokens)
        for offset, tokens in enumerate(record.token_counts)
    )
    return AppendApplied(items=items, deduped=True)


def _upsert(
    group_id: int, command: UpsertConversation, batch: WriteBatch
) -> ConversationApplied | Rejected:
    conversation_id = command.conversation_id
    state_key = keys.conversation_key(group_id, conversation_id)
    metadata_key = keys.metadata_key(group_id, conversation_id)
    state = _load_state(batch, state_key)
    created = state is None
    if state is None:
        state = ConversationState(created_ms=command.now_ms, updated_ms=command.now_ms)
        metadata = command.metadata_json if command.metadata_json is not None else b"{}"
        batch.put(metadata_key, metadata)
    elif state.tombstoned:
        return Rejected(reason=RejectReason.TOMBSTONED, current_version=state.version)
    elif command.metadata_json is not None:
        metadata = command.metadata_json
        batch.put(metadata_key, metadata)
        state = replace(state, updated_ms=max(state.updated_ms, command.now_ms))
    else:
        stored = batch.get(metadata_key)
        if stored is None:
            raise InvariantViolation(f"conversation {conversation_id!r} has no metadata")
        metadata = stored
    batch.put(state_key, state.encode())
    return ConversationApplied(
        conversation_id=conversation_id, state=state, metadata_json=metadata, created=created
    )


def _tombstone(
    group_id: int, command: TombstoneConversation, batch: WriteBatch, effects: list[Effect]
) -> TombstoneApplied | Rejected:
    state_key = keys.conversation_key(group_id, command.conversation_id)
    state = _load_state(batch, state_key)
    if state is None:
        return Rejected(reason=RejectReason.NOT_FOUND)
    if not state.tombstoned:
        updated = max(state.updated_ms, command.now_ms)
        batch.put(state_key, replace(state, tombstoned=True, updated_ms=updated).encode())
        effects.append(Tombstoned(conversation_id=command.conversation_id))
    return TombstoneApplied(conversation_id=command.conversation_id)


def _ack_archived(
    group_id: int, command: AckArchived, batch: WriteBatch
) -> ArchiveAcked | Rejected:
    state_key = keys.conversation_key(group_id, command.conversation_id)
    state = _load_state(batch, state_key)
    if state is None:
        return Rejected(reason=RejectReason.NOT_FOUND)
    # archived_seq only moves forward and never past what exists.
    archived = max(state.archived_seq, min(command.upto_seq, state.last_seq))
    if archived != state.archived_seq:
        batch.put(state_key, replace(state, archived_seq=archived).encode())
    trimmed = 0
    if command.tail_keep is not None:
        trim_upto = min(archived, state.last_seq - command.tail_keep)
        trimmed = _trim(group_id, command.conversation_id, trim_upto, batch)
    return ArchiveAcked(archived_seq=archived, trimmed=trimmed)


def _trim(group_id: int, conversation_id: str, upto_seq: int, batch: WriteBatch) -> int:
    """Delete the messages with ``seq <= upto_seq`` not deleted yet; returns
    how many. The caller guarantees they are archived. Messages have no holes
    and trimming only ever removes a prefix, so the trimmed watermark says
    exactly which keys exist: no scan over the deleted range (whose LevelDB
    tombstones would make every later trim slower)."""
    watermark_key = keys.trimmed_key(group_id, conversation_id)
    raw = batch.get(watermark_key)
    done = 0 if raw is None else int(_U64.unpack(raw)[0])
    if upto_seq <= done:
        return 0
    for seq in range(done + 1, upto_seq + 1):
        batch.delete(keys.message_key(group_id, conversation_id, seq))
    batch.put(watermark_key, _U64.pack(upto_seq))
    return upto_seq - done
