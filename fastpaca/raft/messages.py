"""Raft value types: entries, hard state, configuration, snapshots and messages.

This module owns the shapes every other raft module agrees on. It holds plain
values only: no IO, no encoding (bytes live in ``codec.py`` and
``leveldb.py``), no protocol logic (that is ``core.py``).

Immutable by convention: never assign to a field of a value once built (use
``dataclasses.replace``), since the same ``Entry`` is shared by the unstable
log, the entry cache, Readys and messages. ``Entry``, ``HardState`` and
``Message`` are built on every hot path (one per proposal, per stored or
decoded entry, per message), so they are not ``frozen``: a frozen slots
dataclass's ``__init__`` goes through ``object.__setattr__`` per field,
measured 3.1 us vs 1.1 us for a ``Message`` and about 2x for an ``Entry``.
They are therefore not hashable either (nobody keys on them). The
configuration values stay frozen (rarely built).

Node ids are strings (the cluster's node names, e.g. ``"n1"``). Group ids are
integers in ``[0, 65535]``. Index 0 / term 0 mean "nothing": the first real
log entry has index 1.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "ConfChange",
    "ConfChangeOp",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "Message",
    "MessageType",
    "ReadState",
    "SnapshotMeta",
]


class EntryType(enum.IntEnum):
    NORMAL = 0
    """Opaque state-machine command in ``Entry.data``; empty data is the
    no-op a new leader appends to commit entries of earlier terms (§5.4.2)."""
    CONF_CHANGE = 1
    """``Entry.data`` is an encoded :class:`ConfChange` (see ``codec.py``)."""


@dataclass(slots=True, kw_only=True)
class Entry:
    index: int
    term: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(slots=True, kw_only=True)
class HardState:
    """What must be on stable storage before a node answers anyone (Figure 2)."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfState:
    """Membership of one group. Learners receive the log but never vote and
    never count toward a quorum. A node is never both voter and learner."""

    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()


class ConfChangeOp(enum.IntEnum):
    ADD_LEARNER = 0
    """Add a non-voting member (or demote nothing: a voter stays a voter)."""
    ADD_VOTER = 1
    """Add a voter, or promote an existing learner to voter."""
    REMOVE = 2
    """Remove a voter or a learner."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfChange:
    """A single-server membership change (Raft thesis §4.1). It takes effect
    when the entry carrying it is *applied*; the leader accepts a new one only
    after the previous one is applied."""

    op: ConfChangeOp
    node_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotMeta:
    """Identifies a state-machine snapshot: the state after applying every
    entry up to and including ``index`` (whose term is ``term``), with the
    membership in force at that point."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadState:
    """A confirmed ReadIndex: once the local applied index reaches ``index``,
    a read tagged ``context`` observes every write acknowledged before the
    read was requested (Raft thesis §6.4)."""

    index: int
    context: bytes


class MessageType(enum.IntEnum):
    PRE_VOTE = 1
    PRE_VOTE_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    APPEND = 5
    """AppendEntries. ``index``/``log_term`` name the entry preceding
    ``entries``; ``commit`` is the leader's commit index."""
    APPEND_RESP = 6
    """``index`` is the follower's last matching index on success. On reject,
    ``index`` echoes the rejected ``APPEND.index`` and ``reject_hint`` is the
    follower's best guess of where to back off to."""
    HEARTBEAT = 7
    """Carries ``commit`` (capped at the follower's known match) and, for
    ReadIndex rounds, ``context``."""
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9
    """InstallSnapshot. The core only carries ``snapshot`` metadata; the driver
    streams the data in chunks beside it and steps this message into the
    follower's core once every chunk has arrived and been staged."""
    TIMEOUT_NOW = 10
    """Leadership transfer: the receiver campaigns at once, skipping pre-vote."""
    READ_INDEX = 11
    """Follower → leader: ask for a read index on behalf of ``context``."""
    READ_INDEX_RESP = 12
    """Leader → follower: ``index`` is the confirmed read index for ``context``
    (``reject`` when the leader could not serve it)."""


@dataclass(slots=True, kw_only=True)
class Message:
    type: MessageType
    group_id: int
    sender: str
    to: str
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: SnapshotMeta | None = None
