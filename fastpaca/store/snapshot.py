"""Snapshots of one group's applied state, and restoring from them.

Owns the chunk format. Taking a snapshot only pins a LevelDB snapshot (fast);
the key range is read lazily as chunks are pulled. Restoring wipes the group's
range and writes the pairs, only through the given ``WriteBatch``.

Chunk format: repeated ``[key_len:u32][value_len:u32][key][value]`` where
``key`` is relative to the group prefix, so a snapshot can only ever write
inside the group it is restored into.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fastpaca.raft.codec import CodecError
from fastpaca.raft.kv import KVView, WriteBatch
from fastpaca.store import keys

__all__ = ["GroupSnapshot", "restore_group"]

_PAIR = struct.Struct(">II")


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    """``raft.statemachine.StateSnapshot`` over a pinned view of the KV."""

    view: KVView
    group_id: int
    applied_index: int

    def chunks(self, chunk_bytes: int) -> Iterator[bytes]:
        start, stop = keys.group_range(self.group_id)
        applied_key = keys.applied_index_key(self.group_id)
        prefix_len = len(start)
        parts: list[bytes] = []
        size = 0
        for key, value in self.view.iterate(start, stop):
            if key == applied_key:
                continue  # restore writes the applied index it is given
            relative = key[prefix_len:]
            parts.append(_PAIR.pack(len(relative), len(value)))
            parts.append(relative)
            parts.append(value)
            size += _PAIR.size + len(relative) + len(value)
            if size >= chunk_bytes:
                yield b"".join(parts)
                parts, size = [], 0
        if parts:
            yield b"".join(parts)


def restore_group(group_id: int, chunks: Iterable[bytes], batch: WriteBatch) -> None:
    """Replace the group's state with the pairs in ``chunks``. Raises
    ``CodecError`` for a malformed chunk (the batch must then be discarded)."""
    start, stop = keys.group_range(group_id)
    batch.delete_range(start, stop)
    for chunk in chunks:
        offset = 0
        while offset < len(chunk):
            if offset + _PAIR.size > len(chunk):
                raise CodecError("truncated snapshot pair header")
            key_len, value_len = _PAIR.unpack_from(chunk, offset)
            offset += _PAIR.size
            end = offset + key_len + value_len
            if key_len == 0 or end > len(chunk):
                raise CodecError("truncated snapshot pair")
            key = start + chunk[offset : offset + key_len]
            batch.put(key, chunk[offset + key_len : end])
            offset = end
