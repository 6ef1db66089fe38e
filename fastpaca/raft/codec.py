"""Bytes for raft values: conf-change entry payloads and wire frames.

The only raft module that turns values into bytes and back. Decoding never
trusts its input: anything malformed (truncated, unknown enum, a length that
runs past the end, trailing bytes, bad UTF-8) raises ``CodecError`` and
nothing else.

A wire frame carries everything one node sends one peer in one driver
iteration (all integers big-endian)::

    frame   := version:u8 | sender:name | to:name | n_records:u32 | record*
    name    := len:u8 | utf8
    record  := kind:u8 | body

    MESSAGE       type:u8 group:u16 term:u64 log_term:u64 index:u64 commit:u64
                  reject_hint:u64 flags:u8 ctx_len:u32 ctx n_entries:u32 entry*
                  [snapshot]                          (flags: 1=reject 2=snapshot)
      entry       index:u64 term:u64 type:u8 len:u32 data
      snapshot    index:u64 term:u64 voters:names learners:names
      names       count:u16 (len:u16 utf8)*
    HEARTBEATS    type:u8 count:u32 (group:u16 term:u64 commit:u64 ctx_len:u16 ctx)*
    CHUNK         group:u16 term:u64 snapshot_index:u64 seq:u32 is_last:u8 len:u32 data
    STATUS        group:u16 snapshot_index:u64 success:u8

The heartbeats (and heartbeat responses) of every group to one peer are
coalesced into one HEARTBEATS record of 20 bytes per group. They are placed
after the other messages: Raft tolerates reordering, and an append landing
before the commit index that covers it saves a round trip. Struct packing was
measured against orjson (which also needs base64 for entry data): 3x faster to
encode an append of 100 x 300-byte entries, 1.7x faster to decode (decoding is
dominated by building the ``Entry``/``Message`` values), 20% smaller.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson

from fastpaca.raft.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    SnapshotMeta,
)

__all__ = [
    "CodecError",
    "Frame",
    "SnapshotChunk",
    "SnapshotStatus",
    "decode_conf_change",
    "decode_frame",
    "encode_conf_change",
    "encode_frame",
]

FRAME_VERSION = 1
_KIND_MESSAGE = 1
_KIND_HEARTBEATS = 2
_KIND_CHUNK = 3
_KIND_STATUS = 4
_FLAG_REJECT = 1
_FLAG_SNAPSHOT = 2

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_MESSAGE_HEAD = struct.Struct(">BBHQQQQQBI")  # kind .. flags, ctx_len
_ENTRY_HEAD = struct.Struct(">QQBI")
_SNAPSHOT_HEAD = struct.Struct(">QQ")
_HEARTBEATS_HEAD = struct.Struct(">BBI")
_HEARTBEAT = struct.Struct(">HQQH")
_CHUNK_HEAD = struct.Struct(">BHQQIBI")
_STATUS = struct.Struct(">BHQB")
_MESSAGE_TYPES = {int(t): t for t in MessageType}
_ENTRY_TYPES = {int(t): t for t in EntryType}
_HEARTBEAT_TYPES = (MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP)


class CodecError(ValueError):
    """Raised for bytes that do not decode to a valid value."""


def encode_conf_change(cc: ConfChange) -> bytes:
    return orjson.dumps({"op": int(cc.op), "node": cc.node_id})


def decode_conf_change(data: bytes) -> ConfChange:
    try:
        raw = orjson.loads(data)
        return ConfChange(op=ConfChangeOp(raw["op"]), node_id=str(raw["node"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"bad conf change payload: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotChunk:
    """Piece ``seq`` of the state-machine snapshot at ``snapshot_index`` that a
    leader (at ``term``) streams to a follower beside its SNAPSHOT message."""

    group_id: int
    term: int
    snapshot_index: int
    seq: int
    is_last: bool
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotStatus:
    """Follower → leader: the snapshot at ``snapshot_index`` was received and
    handed to the core (``success``) or the transfer broke (retry later)."""

    group_id: int
    snapshot_index: int
    success: bool


@dataclass(slots=True, kw_only=True)
class Frame:
    sender: str
    to: str
    messages: list[Message] = field(default_factory=list)
    chunks: list[SnapshotChunk] = field(default_factory=list)
    statuses: list[SnapshotStatus] = field(default_factory=list)


# --- encoding -----------------------------------------------------------------------


def encode_frame(
    sender: str,
    to: str,
    messages: Iterable[Message],
    chunks: Sequence[SnapshotChunk] = (),
    statuses: Sequence[SnapshotStatus] = (),
) -> bytes:
    """One frame for everything ``sender`` sends ``to`` this iteration. Every
    message must be addressed from ``sender`` to ``to``."""
    parts: list[bytes] = [_U8.pack(FRAME_VERSION), _pack_name(sender), _pack_name(to), b""]
    heartbeats: dict[MessageType, list[Message]] = {}
    records = 0
    for msg in messages:
        if msg.to != to or msg.sender != sender:
            raise ValueError(f"message {msg.sender}->{msg.to} in frame {sender}->{to}")
        if _is_coalescable(msg):
            heartbeats.setdefault(msg.type, []).append(msg)
        else:
            _encode_message(msg, parts)
            records += 1
    records += len(heartbeats) + len(chunks) + len(statuses)
    for msg_type, batch in heartbeats.items():
        parts.append(_HEARTBEATS_HEAD.pack(_KIND_HEARTBEATS, msg_type, len(batch)))
        for msg in batch:
            parts.append(_HEARTBEAT.pack(msg.group_id, msg.term, msg.commit, len(msg.context)))
            parts.append(msg.context)
    for chunk in chunks:
        parts.append(
            _CHUNK_HEAD.pack(
                _KIND_CHUNK,
                chunk.group_id,
                chunk.term,
                chunk.snapshot_index,
                chunk.seq,
                chunk.is_last,
                len(chunk.data),
            )
        )
        parts.append(chunk.data)
    for status in statuses:
        parts.append(
            _STATUS.pack(_KIND_STATUS, status.group_id, status.snapshot_index, status.success)
        )
    parts[3] = _U32.pack(records)  # counted so a cut at a record boundary is caught
    return b"".join(parts)


def _is_coalescable(msg: Message) -> bool:
    return (
        msg.type in _HEARTBEAT_TYPES
        and not msg.entries
        and msg.index == 0
        and msg.log_term == 0
        and not msg.reject
        and msg.reject_hint == 0
        and msg.snapshot is None
        and len(msg.context) <= 0xFFFF
    )


def _encode_message(msg: Message, parts: list[bytes]) -> None:
    flags = (_FLAG_REJECT if msg.reject else 0) | (_FLAG_SNAPSHOT if msg.snapshot else 0)
    parts.append(
        _MESSAGE_HEAD.pack(
            _KIND_MESSAGE,
            msg.type,
            msg.group_id,
            msg.term,
            msg.log_term,
            msg.index,
            msg.commit,
            msg.reject_hint,
            flags,
            len(msg.context),
        )
    )
    parts.append(msg.context)
    parts.append(_U32.pack(len(msg.entries)))
    pack_entry = _ENTRY_HEAD.pack
    for entry in msg.entries:
        parts.append(pack_entry(entry.index, entry.term, entry.type, len(entry.data)))
        parts.append(entry.data)
    if msg.snapshot is not None:
        snap = msg.snapshot
        parts.append(_SNAPSHOT_HEAD.pack(snap.index, snap.term))
        parts.append(_pack_names(snap.conf_state.voters))
        parts.append(_pack_names(snap.conf_state.learners))


def _pack_name(name: str) -> bytes:
    raw = name.encode()
    if len(raw) > 0xFF:
        raise ValueError(f"node id too long: {name!r}")
    return _U8.pack(len(raw)) + raw


def _pack_names(names: tuple[str, ...]) -> bytes:
    parts = [_U16.pack(len(names))]
    for name in names:
        raw = name.encode()
        parts.append(_U16.pack(len(raw)) + raw)
    return b"".join(parts)


# --- decoding -----------------------------------------------------------------------


def decode_frame(data: bytes) -> Frame:
    """Parse a frame built by ``encode_frame``; ``CodecError`` on anything else."""
    try:
        return _Decoder(data).frame()
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise CodecError(f"malformed raft frame: {exc}") from exc


class _Decoder:
    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data)

    def frame(self) -> Frame:
        version = self._u8()
        if version != FRAME_VERSION:
            raise CodecError(f"unknown raft frame version {version}")
        frame = Frame(sender=self._name(), to=self._name())
        if not frame.sender or not frame.to:
            raise CodecError("empty node id in raft frame")
        (records,) = self._unpack(_U32)
        if records > self._end - self._pos:  # every record takes at least a byte
            raise CodecError(f"record count {records} exceeds frame")
        for _ in range(records):
            kind = self._data[self._pos]
            if kind == _KIND_MESSAGE:
                frame.messages.append(self._message(frame.sender, frame.to))
            elif kind == _KIND_HEARTBEATS:
                self._heartbeats(frame)
            elif kind == _KIND_CHUNK:
                frame.chunks.append(self._chunk())
            elif kind == _KIND_STATUS:
                _, group_id, index, success = self._unpack(_STATUS)
                frame.statuses.append(
                    SnapshotStatus(group_id=group_id, snapshot_index=index, success=_bool(success))
                )
            else:
                raise CodecError(f"unknown record kind {kind}")
        if self._pos != self._end:
            raise CodecError(f"{self._end - self._pos} trailing bytes after the last record")
        return frame

    def _message(self, sender: str, to: str) -> Message:
        _, type_code, group_id, term, log_term, index, commit, hint, flags, ctx_len = self._unpack(
            _MESSAGE_HEAD
        )
        msg_type = _MESSAGE_TYPES.get(type_code)
        if msg_type is None or flags & ~(_FLAG_REJECT | _FLAG_SNAPSHOT):
            raise CodecError(f"bad message type {type_code} or flags {flags}")
        context = self._bytes(ctx_len)
        (count,) = self._unpack(_U32)
        if count > self._end - self._pos:  # each entry takes >= 21 bytes
            raise CodecError(f"entry count {count} exceeds frame")
        entries = self._entries(count)
        snapshot = self._snapshot() if flags & _FLAG_SNAPSHOT else None
        return Message(
            type=msg_type,
            group_id=group_id,
            sender=sender,
            to=to,
            term=term,
            log_term=log_term,
            index=index,
            entries=entries,
            commit=commit,
            reject=bool(flags & _FLAG_REJECT),
            reject_hint=hint,
            context=context,
            snapshot=snapshot,
        )

    def _entries(self, count: int) -> tuple[Entry, ...]:
        # Inlined (no per-entry method calls): this loop is the follower's hot path.
        data, pos, end_of_frame = self._data, self._pos, self._end
        unpack, head_size, types = _ENTRY_HEAD.unpack_from, _ENTRY_HEAD.size, _ENTRY_TYPES
        entries = []
        for _ in range(count):
            index, term, type_code, size = unpack(data, pos)
            pos += head_size
            end = pos + size
            entry_type = types.get(type_code)
            if entry_type is None or end > end_of_frame:
                raise CodecError(f"bad entry (type {type_code}, length {size})")
            entries.append(Entry(index=index, term=term, type=entry_type, data=data[pos:end]))
            pos = end
        self._pos = pos
        return tuple(entries)

    def _snapshot(self) -> SnapshotMeta:
        index, term = self._unpack(_SNAPSHOT_HEAD)
        conf_state = ConfState(voters=self._names(), learners=self._names())
        return SnapshotMeta(index=index, term=term, conf_state=conf_state)

    def _heartbeats(self, frame: Frame) -> None:
        _, type_code, count = self._unpack(_HEARTBEATS_HEAD)
        if type_code not in (MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP):
            raise CodecError(f"bad heartbeat type {type_code}")
        if count * _HEARTBEAT.size > self._end - self._pos:
            raise CodecError(f"heartbeat count {count} exceeds frame")
        msg_type = _MESSAGE_TYPES[type_code]
        sender, to, append = frame.sender, frame.to, frame.messages.append
        for _ in range(count):
            group_id, term, commit, ctx_len = self._unpack(_HEARTBEAT)
            append(
                Message(
                    type=msg_type,
                    group_id=group_id,
                    sender=sender,
                    to=to,
                    term=term,
                    commit=commit,
                    context=self._bytes(ctx_len),
                )
            )

    def _chunk(self) -> SnapshotChunk:
        _, group_id, term, index, seq, is_last, size = self._unpack(_CHUNK_HEAD)
        return SnapshotChunk(
            group_id=group_id,
            term=term,
            snapshot_index=index,
            seq=seq,
            is_last=_bool(is_last),
            data=self._bytes(size),
        )

    def _unpack(self, layout: struct.Struct) -> tuple[int, ...]:
        values = layout.unpack_from(self._data, self._pos)
        self._pos += layout.size
        return values

    def _u8(self) -> int:
        return self._unpack(_U8)[0]

    def _bytes(self, size: int) -> bytes:
        end = self._pos + size
        if end > self._end:
            raise CodecError(f"length {size} runs past the frame")
        value = self._data[self._pos : end]
        self._pos = end
        return value

    def _name(self) -> str:
        return self._bytes(self._u8()).decode()

    def _names(self) -> tuple[str, ...]:
        (count,) = self._unpack(_U16)
        names = []
        for _ in range(count):
            (size,) = self._unpack(_U16)
            names.append(self._bytes(size).decode())
        return tuple(names)


def _bool(flag: int) -> bool:
    if flag > 1:
        raise CodecError(f"bad boolean {flag}")
    return flag == 1
