"""The Ready value: everything one RaftNode wants done by the IO layer.

The core never performs IO. ``RaftNode.ready()`` hands back a :class:`Ready`;
the caller (``driver.py`` in production, the simulator in tests) must, in this
order:

1. **Persist** ``snapshot`` (install: drop the log, restore the state machine
   from the staged data), then ``entries`` (append; an entry whose index is at
   or below the stable last index first truncates the stable log from that
   index on), then ``hard_state``. When ``must_sync`` is true the write must be
   durable (fsync) before step 2. All groups' Readys of one driver iteration go
   into one atomic write.
2. **Send** ``messages``. Persist-before-send is the rule that makes a vote or
   an append acknowledgement a promise: a message may acknowledge only state
   that is already on stable storage.
3. **Apply** ``committed_entries`` in order (they may include entries that were
   persisted in step 1 of this same Ready). Conf-change entries are applied by
   calling ``RaftNode.apply_conf_change``.
4. Hand ``read_states`` to whoever waits on those read contexts; each is
   servable once the applied index reaches its ``index``.
5. Call ``RaftNode.advance(ready)``.

Nothing in a Ready may be dropped or reordered, and ``ready()`` must not be
called again before ``advance`` for the previous Ready.

One shortcut exists, for a group whose only voter is this node:
``RaftNode.ready_alone()`` returns just (entries, hard state) when that is
all a Ready would hold; the caller persists both, applies those same entries
in the same write, and then calls ``advance_alone``. Steps 2 and 4 have
nothing to do there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastpaca.raft.messages import Entry, HardState, Message, ReadState, SnapshotMeta

__all__ = ["Ready", "Role", "SoftState"]

import enum


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True, kw_only=True)
class SoftState:
    """Volatile state worth reporting (metrics, routing): never persisted."""

    leader_id: str | None
    role: Role


@dataclass(slots=True, kw_only=True)
class Ready:
    group_id: int
    soft_state: SoftState | None = None
    """Set when leader or role changed since the last Ready."""
    hard_state: HardState | None = None
    """Set when term, vote or commit changed; persist it."""
    snapshot: SnapshotMeta | None = None
    """An incoming snapshot the core accepted; install it before ``entries``."""
    entries: list[Entry] = field(default_factory=list)
    """Entries to append to stable storage (see module docstring)."""
    committed_entries: list[Entry] = field(default_factory=list)
    """Entries to apply to the state machine, in order."""
    messages: list[Message] = field(default_factory=list)
    """Messages to send once steps 1 is durable."""
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False
    """True when ``hard_state`` term/vote or ``entries`` or ``snapshot`` changed:
    those must be fsync'd. A commit-only change need not be."""
