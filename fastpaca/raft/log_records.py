"""Bytes of the records a group's Raft log keeps in LevelDB.

Owns the stored formats only (``leveldb.py`` owns the keys and when to write).
Every record is ``version:u8 | crc32:u32 | body``. An entry's CRC also covers
its index (so a record copied under the wrong key is caught); its body is
``term:u64 | type:u8 | data``. Hard state, conf state and snapshot meta are
sealed the same way. Decoding a record that fails its checksum, has an
unknown version or is truncated raises ``CorruptLogError(group, index, ...)``
(index 0 for the non-entry records): a bad record is never returned.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable
from typing import TypeVar

from fastpaca.errors import CorruptLogError
from fastpaca.raft.messages import ConfState, Entry, EntryType, HardState, SnapshotMeta

__all__ = [
    "decode_conf_state",
    "decode_entry",
    "decode_hard_state",
    "decode_snapshot_meta",
    "encode_conf_state",
    "encode_entry",
    "encode_entry_at",
    "encode_hard_state",
    "encode_snapshot_meta",
]

_FORMAT_VERSION = 1
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_RECORD_HEAD = struct.Struct(">BI")  # version, crc32
_ENTRY_HEAD = struct.Struct(">BIQB")  # version, crc32, term, type
_TERM_TYPE = struct.Struct(">QB")
_HARD_STATE = struct.Struct(">QQ")  # term, commit (+ vote bytes)
_SNAPSHOT_HEAD = struct.Struct(">QQ")  # index, term (+ conf state)
_ENTRY_TYPES = {int(t): t for t in EntryType}
_T = TypeVar("_T")


def encode_entry(entry: Entry) -> bytes:
    """The stored record of ``entry`` (its key carries the index)."""
    return encode_entry_at(_U64.pack(entry.index), entry)


def encode_entry_at(index_bytes: bytes, entry: Entry) -> bytes:
    """``encode_entry`` for a caller that already packed the index (its key)."""
    body_tail = _TERM_TYPE.pack(entry.term, entry.type) + entry.data
    crc = zlib.crc32(body_tail, zlib.crc32(index_bytes))
    return _RECORD_HEAD.pack(_FORMAT_VERSION, crc) + body_tail


def decode_entry(group_id: int, index: int, record: bytes) -> Entry:
    if len(record) < _ENTRY_HEAD.size:
        raise CorruptLogError(group_id, index, f"truncated entry record ({len(record)} bytes)")
    version, crc, term, type_code = _ENTRY_HEAD.unpack_from(record)
    if version != _FORMAT_VERSION:
        raise CorruptLogError(group_id, index, f"unknown record version {version}")
    body_tail = memoryview(record)[5:]
    if zlib.crc32(body_tail, zlib.crc32(_U64.pack(index))) != crc:
        raise CorruptLogError(group_id, index, "entry checksum mismatch")
    entry_type = _ENTRY_TYPES.get(type_code)
    if entry_type is None:
        raise CorruptLogError(group_id, index, f"unknown entry type {type_code}")
    return Entry(index=index, term=term, type=entry_type, data=record[_ENTRY_HEAD.size :])


def _seal(body: bytes) -> bytes:
    return _RECORD_HEAD.pack(_FORMAT_VERSION, zlib.crc32(body)) + body


def _unseal(group_id: int, what: str, record: bytes) -> memoryview:
    if len(record) < _RECORD_HEAD.size:
        raise CorruptLogError(group_id, 0, f"truncated {what} record")
    version, crc = _RECORD_HEAD.unpack_from(record)
    if version != _FORMAT_VERSION:
        raise CorruptLogError(group_id, 0, f"unknown {what} record version {version}")
    body = memoryview(record)[_RECORD_HEAD.size :]
    if zlib.crc32(body) != crc:
        raise CorruptLogError(group_id, 0, f"{what} checksum mismatch")
    return body


@functools.lru_cache(maxsize=256)
def _pack_names(names: tuple[str, ...]) -> bytes:
    # Cached: a group's membership is packed into its log base on every
    # append of a lone voter (``LevelDBStorage.stage_fold``), and only a
    # handful of distinct memberships ever exist.
    parts = [_U16.pack(len(names))]
    for name in names:
        raw = name.encode()
        parts.append(_U16.pack(len(raw)) + raw)
    return b"".join(parts)


def _unpack_names(body: memoryview, offset: int) -> tuple[tuple[str, ...], int]:
    (count,) = _U16.unpack_from(body, offset)
    offset += 2
    names = []
    for _ in range(count):
        (size,) = _U16.unpack_from(body, offset)
        offset += 2
        if offset + size > len(body):
            raise struct.error("name runs past the record")
        names.append(bytes(body[offset : offset + size]).decode())
        offset += size
    return tuple(names), offset


def _pack_conf_state(cs: ConfState) -> bytes:
    return _pack_names(cs.voters) + _pack_names(cs.learners)


def _unpack_conf_state(body: memoryview, offset: int) -> tuple[ConfState, int]:
    voters, offset = _unpack_names(body, offset)
    learners, offset = _unpack_names(body, offset)
    return ConfState(voters=voters, learners=learners), offset


def _parse_record(
    group_id: int, what: str, record: bytes, parse: Callable[[memoryview], tuple[_T, int]]
) -> _T:
    body = _unseal(group_id, what, record)
    try:
        value, end = parse(body)
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptLogError(group_id, 0, f"malformed {what} record: {exc}") from exc
    if end != len(body):
        raise CorruptLogError(group_id, 0, f"trailing bytes in {what} record")
    return value


def encode_hard_state(hs: HardState) -> bytes:
    vote = b"" if hs.vote is None else hs.vote.encode()
    return _seal(_HARD_STATE.pack(hs.term, hs.commit) + _U16.pack(len(vote)) + vote)


def _parse_hard_state(body: memoryview) -> tuple[HardState, int]:
    term, commit = _HARD_STATE.unpack_from(body)
    (size,) = _U16.unpack_from(body, _HARD_STATE.size)
    start = _HARD_STATE.size + 2
    if start + size > len(body):
        raise struct.error("vote runs past the record")
    vote = bytes(body[start : start + size]).decode() if size else None
    return HardState(term=term, vote=vote, commit=commit), start + size


def encode_conf_state(cs: ConfState) -> bytes:
    return _seal(_pack_conf_state(cs))


def _parse_conf_state(body: memoryview) -> tuple[ConfState, int]:
    return _unpack_conf_state(body, 0)


def encode_snapshot_meta(meta: SnapshotMeta) -> bytes:
    return _seal(_SNAPSHOT_HEAD.pack(meta.index, meta.term) + _pack_conf_state(meta.conf_state))


def _parse_snapshot_meta(body: memoryview) -> tuple[SnapshotMeta, int]:
    index, term = _SNAPSHOT_HEAD.unpack_from(body)
    conf_state, end = _unpack_conf_state(body, _SNAPSHOT_HEAD.size)
    return SnapshotMeta(index=index, term=term, conf_state=conf_state), end


def decode_hard_state(group_id: int, record: bytes) -> HardState:
    return _parse_record(group_id, "hard state", record, _parse_hard_state)


def decode_conf_state(group_id: int, record: bytes) -> ConfState:
    return _parse_record(group_id, "conf state", record, _parse_conf_state)


def decode_snapshot_meta(group_id: int, record: bytes) -> SnapshotMeta:
    return _parse_record(group_id, "snapshot", record, _parse_snapshot_meta)
