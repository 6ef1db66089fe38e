"""Key layout of the applied conversation state in the node's LevelDB.

Owns the byte layout only; it reads and writes nothing. Every key of group
``g`` starts with ``b"s" + g:u16`` (the raft log lives under ``b"r"``), so a
group's whole state is one contiguous range (snapshots, restore). Integers are
fixed-width big-endian so byte order equals numeric order. A conversation id is
written as ``len:u16 + utf8`` so one id is never a prefix of another's range.

    s<g> a                          applied index (u64)
    s<g> c <len><id>                conversation counters (state.ConversationState)
    s<g> d <len><id>                conversation metadata (JSON object bytes)
    s<g> m <len><id> <seq:u64>      message (JSON object bytes, without seq)
    s<g> k <len><id> <key bytes>    idempotency record (state.IdempotencyRecord)
    s<g> i <len><id> <version:u64>  idempotency key written by that append
    s<g> t <len><id>                messages with seq <= this (u64) were trimmed (archive)
"""

from __future__ import annotations

import struct

__all__ = [
    "SEQ_MAX",
    "ConversationKeys",
    "applied_index_key",
    "conversation_id_of_key",
    "conversation_key",
    "conversation_range",
    "group_range",
    "idempotency_index_key",
    "idempotency_index_range",
    "idempotency_key",
    "message_key",
    "message_range",
    "metadata_key",
    "seq_of_message_key",
    "trimmed_key",
]

SEQ_MAX = 2**64 - 1

_GROUP = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_LEN = struct.Struct(">H")
# The tags after the group prefix of the keys ``ConversationKeys`` builds
# (see the layout above).
_STATE = b"c"
_MESSAGE = b"m"
_IDEMPOTENCY = b"k"
_IDEMPOTENCY_INDEX = b"i"


def _group_prefix(group_id: int) -> bytes:
    return b"s" + _GROUP.pack(group_id)


def group_range(group_id: int) -> tuple[bytes, bytes]:
    """``[start, stop)`` covering every key of the group's applied state."""
    start = _group_prefix(group_id)
    stop = b"t" if group_id == 0xFFFF else _group_prefix(group_id + 1)
    return start, stop


def applied_index_key(group_id: int) -> bytes:
    return _group_prefix(group_id) + b"a"


def _conversation_part(conversation_id: str) -> bytes:
    raw = conversation_id.encode()
    return _LEN.pack(len(raw)) + raw


class ConversationKeys:
    """The keys of one conversation's values, with the ``group | conversation``
    part encoded once: an append writes four of them (message, counters,
    idempotency key and its index) and reads one. The module's functions
    build their keys through it, so each layout is written down once."""

    __slots__ = ("_conversation", "_group")

    def __init__(self, group_id: int, conversation_id: str) -> None:
        self._group = _group_prefix(group_id)
        self._conversation = _conversation_part(conversation_id)

    def state(self) -> bytes:
        """The counters (``ConversationState``)."""
        return self._group + _STATE + self._conversation

    def message(self, seq: int) -> bytes:
        return self._group + _MESSAGE + self._conversation + _U64.pack(seq)

    def messages_end(self) -> bytes:
        """Above every message key of the conversation (a range's stop)."""
        return self._group + _MESSAGE + self._conversation + b"\xff" * 9

    def idempotency(self, key: str) -> bytes:
        return self._group + _IDEMPOTENCY + self._conversation + key.encode()

    def idempotency_index(self, version: int) -> bytes:
        return self._group + _IDEMPOTENCY_INDEX + self._conversation + _U64.pack(version)


def conversation_key(group_id: int, conversation_id: str) -> bytes:
    return ConversationKeys(group_id, conversation_id).state()


def conversation_range(group_id: int) -> tuple[bytes, bytes]:
    """``[start, stop)`` of every conversation-counters key of the group."""
    prefix = _group_prefix(group_id)
    return prefix + b"c", prefix + b"d"


def conversation_id_of_key(key: bytes) -> str:
    """The id in a ``conversation_key``."""
    return key[len(_group_prefix(0)) + 1 + _LEN.size :].decode()


def trimmed_key(group_id: int, conversation_id: str) -> bytes:
    return _group_prefix(group_id) + b"t" + _conversation_part(conversation_id)


def metadata_key(group_id: int, conversation_id: str) -> bytes:
    return _group_prefix(group_id) + b"d" + _conversation_part(conversation_id)


def message_key(group_id: int, conversation_id: str, seq: int) -> bytes:
    return ConversationKeys(group_id, conversation_id).message(seq)


def message_range(
    group_id: int, conversation_id: str, lo_seq: int, hi_seq: int
) -> tuple[bytes, bytes]:
    """Keys of messages with ``lo_seq <= seq < hi_seq`` (``hi_seq`` may be ``SEQ_MAX + 1``)."""
    conversation = ConversationKeys(group_id, conversation_id)
    stop = conversation.message(hi_seq) if hi_seq <= SEQ_MAX else conversation.messages_end()
    return conversation.message(lo_seq), stop


def seq_of_message_key(key: bytes) -> int:
    seq: int = _U64.unpack_from(key, len(key) - 8)[0]
    return seq


def idempotency_key(group_id: int, conversation_id: str, key: str) -> bytes:
    return ConversationKeys(group_id, conversation_id).idempotency(key)


def idempotency_index_key(group_id: int, conversation_id: str, version: int) -> bytes:
    return ConversationKeys(group_id, conversation_id).idempotency_index(version)


def idempotency_index_range(
    group_id: int, conversation_id: str, lo_version: int, hi_version: int
) -> tuple[bytes, bytes]:
    """Index keys of appends with ``lo_version <= version < hi_version``."""
    conversation = ConversationKeys(group_id, conversation_id)
    return conversation.idempotency_index(lo_version), conversation.idempotency_index(hi_version)
