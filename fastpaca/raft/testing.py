"""A tiny deterministic key-value state machine for raft tests and the simulator.

``KVStateMachine`` implements ``statemachine.StateMachine`` over the node's
``KV`` under prefix ``b"s" + group:u16`` (the state-machine prefix), the way
the real conversation FSM does: every write, including the applied index,
goes into the iteration's ``WriteBatch``. It is test support only: the
service never imports it.

Commands (``Entry.data``), built with :func:`put_command`:
``b"P" | key_len:u16 | key | value`` sets ``key`` and returns the previous
value (``None`` if absent). The empty no-op and conf-change entries return
``None``. Anything else returns the string ``"bad command"`` (deterministic on
every replica: bad input is not a reason to diverge or crash).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastpaca.raft.codec import CodecError
from fastpaca.raft.kv import KV, KVView, WriteBatch
from fastpaca.raft.messages import Entry, EntryType

__all__ = ["KVStateMachine", "KVStateSnapshot", "put_command"]

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_PAIR = struct.Struct(">HI")  # key length, value length


def put_command(key: bytes, value: bytes) -> bytes:
    return b"P" + _U16.pack(len(key)) + key + value


def _group_prefix(group_id: int) -> bytes:
    return b"s" + _U16.pack(group_id)


def _applied_key(group_id: int) -> bytes:
    return _group_prefix(group_id) + b"a"


def _data_key(group_id: int, key: bytes) -> bytes:
    return _group_prefix(group_id) + b"d" + key


def _data_range(group_id: int) -> tuple[bytes, bytes]:
    prefix = _group_prefix(group_id)
    return prefix + b"d", prefix + b"e"


class KVStateMachine:
    def __init__(self, kv: KV) -> None:
        self._kv = kv

    def applied_index(self, group_id: int) -> int:
        raw = self._kv.get(_applied_key(group_id))
        return 0 if raw is None else int(_U64.unpack(raw)[0])

    def get(self, group_id: int, key: bytes) -> bytes | None:
        """The locally applied value (a read; linearizable after a barrier)."""
        return self._kv.get(_data_key(group_id, key))

    def items(self, group_id: int) -> dict[bytes, bytes]:
        start, stop = _data_range(group_id)
        return {k[len(start) :]: v for k, v in self._kv.iterate(start, stop)}

    def apply(self, group_id: int, entries: Sequence[Entry], batch: WriteBatch) -> list[Any]:
        results: list[Any] = []
        data_prefix = _group_prefix(group_id) + b"d"  # once per batch: the bench's hot loop
        for entry in entries:
            if entry.type is EntryType.CONF_CHANGE or not entry.data:
                results.append(None)
            else:
                results.append(_apply_put(data_prefix, entry.data, batch))
        if entries:
            batch.put(_applied_key(group_id), _U64.pack(entries[-1].index))
        return results

    def snapshot(self, group_id: int) -> KVStateSnapshot:
        view = self._kv.snapshot()
        raw = view.get(_applied_key(group_id))
        applied = 0 if raw is None else int(_U64.unpack(raw)[0])
        return KVStateSnapshot(view=view, group_id=group_id, applied_index=applied)

    def restore(
        self, group_id: int, applied_index: int, chunks: Iterable[bytes], batch: WriteBatch
    ) -> None:
        """Replace the group's state; ``CodecError`` for a malformed chunk."""
        start, stop = _data_range(group_id)
        batch.delete_range(start, stop)
        for chunk in chunks:
            for key, value in _unpack_pairs(chunk):
                batch.put(_data_key(group_id, key), value)
        if applied_index:
            batch.put(_applied_key(group_id), _U64.pack(applied_index))
        else:
            batch.delete(_applied_key(group_id))


def _apply_put(data_prefix: bytes, data: bytes, batch: WriteBatch) -> Any:
    if data[:1] != b"P" or len(data) < 3:
        return "bad command"
    (key_len,) = _U16.unpack_from(data, 1)
    if 3 + key_len > len(data):
        return "bad command"
    key = data_prefix + data[3 : 3 + key_len]
    previous = batch.get(key)
    batch.put(key, data[3 + key_len :])
    return previous


@dataclass(frozen=True, slots=True)
class KVStateSnapshot:
    view: KVView
    group_id: int
    applied_index: int

    def chunks(self, chunk_bytes: int) -> Iterator[bytes]:
        start, stop = _data_range(self.group_id)
        parts: list[bytes] = []
        size = 0
        for key, value in self.view.iterate(start, stop):
            relative = key[len(start) :]
            parts.append(_PAIR.pack(len(relative), len(value)) + relative + value)
            size += _PAIR.size + len(relative) + len(value)
            if size >= chunk_bytes:
                yield b"".join(parts)
                parts, size = [], 0
        if parts:
            yield b"".join(parts)


def _unpack_pairs(chunk: bytes) -> Iterator[tuple[bytes, bytes]]:
    offset = 0
    while offset < len(chunk):
        if offset + _PAIR.size > len(chunk):
            raise CodecError("truncated snapshot chunk")
        key_len, value_len = _PAIR.unpack_from(chunk, offset)
        offset += _PAIR.size
        end = offset + key_len + value_len
        if end > len(chunk):
            raise CodecError("snapshot pair runs past its chunk")
        yield chunk[offset : offset + key_len], chunk[offset + key_len : end]
        offset = end
