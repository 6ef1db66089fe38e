"""One group's stable Raft log over the node's shared KV (LevelDB in production).

``LevelDBStorage`` implements the read side the core uses (``LogStorage``) and
the write side the host uses: ``stage_*`` methods put records into the
iteration's ``WriteBatch``; ``on_written`` moves the in-memory view (first and
last index, hard state, membership, a bounded cache of recent entries) forward
only once that batch is durably written, and ``on_write_failed`` forgets what
was staged. It never writes to the KV itself and never decides *what* to
write: that is the core's Ready, handed over by ``host.py``. The entry
caches of all groups share one node-wide ``CacheBudget`` (idle groups' caches
go first), so replication reads rarely touch LevelDB and memory stays bounded.

Key layout (every integer fixed-width big-endian, so byte order = numeric order)::

    b"r" + group:u16 + b"c"                 conf state (membership last applied)
    b"r" + group:u16 + b"e" + index:u64     log entry
    b"r" + group:u16 + b"h"                 hard state (term, vote, commit)
    b"r" + group:u16 + b"s"                 snapshot meta (the compacted log's base)
    b"r" + group:u16 + b"x" + seq:u32       incoming snapshot chunk being staged

The state machine owns prefix ``b"s" + group:u16``; nothing here touches it.

Records are checksummed and versioned (format in ``log_records.py``): a
corrupt, truncated or missing record raises ``CorruptLogError(group, index,
...)`` and is never returned, so it can never be applied.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastpaca.errors import CorruptLogError
from fastpaca.raft.kv import KVView, WriteBatch
from fastpaca.raft.log_records import (
    decode_conf_state,
    decode_entry,
    decode_hard_state,
    decode_snapshot_meta,
    encode_conf_state,
    encode_entry_at,
    encode_hard_state,
    encode_snapshot_meta,
)
from fastpaca.raft.messages import ConfState, Entry, EntryType, HardState, SnapshotMeta
from fastpaca.raft.storage import CompactedError, UnavailableError, limit_entry_bytes

__all__ = ["CacheBudget", "LevelDBStorage", "group_prefix", "staging_key"]

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_MAX_INDEX = (1 << 64) - 1
_CACHE_MAX_ENTRIES = 1 << 16
"""Per-group entry-count bound of the cache (the byte bounds matter more).
It must exceed what is in flight per group: committed entries are applied
from the cache, and at 8192 a group with 10,000 proposals in flight read
and checksummed every entry back from LevelDB to apply it (a fifth of a
follower's CPU in the loopback bench)."""


def group_prefix(group_id: int) -> bytes:
    """Every raft key of ``group_id`` starts with this."""
    return b"r" + _U16.pack(group_id)


def staging_key(group_id: int, seq: int) -> bytes:
    """Key of chunk ``seq`` of the snapshot ``group_id`` is receiving."""
    return group_prefix(group_id) + b"x" + _U32.pack(seq)


def _stored_conf_state(kv: KVView, group_id: int) -> ConfState:
    """The group's last applied membership as stored (empty if none)."""
    raw = kv.get(group_prefix(group_id) + b"c")
    return decode_conf_state(group_id, raw) if raw else ConfState()


def _entry_key(prefix: bytes, index: int) -> bytes:
    return prefix + b"e" + _U64.pack(index)


# --- the storage -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _View:
    """What is durable: the log is ``[first_index, last_index]``."""

    first_index: int
    last_index: int
    hard_state: HardState
    conf_state: ConfState
    snapshot: SnapshotMeta


class LevelDBStorage:
    """A group's log over a ``KV``. Build it with :meth:`open` (reads what is on
    disk, empty for a new group). Reads answer from the durable view only; the
    ``stage_*`` writes of one batch build on each other and become visible at
    :meth:`on_written`. Not thread-safe: the host calls it from one thread."""

    def __init__(
        self,
        kv: KVView,
        group_id: int,
        view: _View,
        *,
        budget: CacheBudget | None = None,
        cache_max_entries: int = _CACHE_MAX_ENTRIES,
        cache_max_bytes: int = 8 << 20,
    ) -> None:
        self._kv = kv
        self._group_id = group_id
        self._prefix = group_prefix(group_id)
        self._view = view
        self._staged: _View | None = None
        self._on_commit: list[tuple[Callable[[Any], None], Any]] = []
        """(action, argument) pairs to run, in staging order, once written."""
        # Suffix of the durable log, so replication and term checks rarely
        # read LevelDB: covers [_cache_first, last_index] (empty when
        # _cache_first == last_index + 1). Bounded per group. A group whose
        # only member is this node keeps only its last entry: nobody
        # replicates from it, and it applies entries from the write that
        # stages them.
        self._cache: list[Entry] = []
        self._cache_first = view.last_index + 1
        self._cache_bytes = 0
        self._cache_max_entries = cache_max_entries
        self._cache_max_bytes = cache_max_bytes
        self._budget = budget

    @classmethod
    def open(
        cls,
        kv: KVView,
        group_id: int,
        *,
        budget: CacheBudget | None = None,
        cache_max_entries: int = _CACHE_MAX_ENTRIES,
    ) -> LevelDBStorage:
        """Rebuild the group's durable view from ``kv`` (after a restart or a
        crash); an absent group yields an empty log. Checks that the log starts
        right after the snapshot and that its newest entries verify."""
        prefix = group_prefix(group_id)
        raw_hs, raw_snap = kv.get(prefix + b"h"), kv.get(prefix + b"s")
        hs = decode_hard_state(group_id, raw_hs) if raw_hs else HardState()
        cs = _stored_conf_state(kv, group_id)
        snap = decode_snapshot_meta(group_id, raw_snap) if raw_snap else SnapshotMeta()
        first = snap.index + 1
        last = snap.index
        for key, _ in kv.iterate(_entry_key(prefix, first), _entry_key(prefix, _MAX_INDEX)):
            if _U64.unpack_from(key, 4)[0] != first:
                raise CorruptLogError(group_id, first, "log does not start after the snapshot")
            break
        for key, _ in kv.iterate(
            _entry_key(prefix, first), _entry_key(prefix, _MAX_INDEX), reverse=True
        ):
            last = _U64.unpack_from(key, 4)[0]
            break
        view = _View(first, last, hs, cs, snap)
        storage = cls(kv, group_id, view, budget=budget, cache_max_entries=cache_max_entries)
        storage._warm_cache()
        if budget is not None and storage._cache_bytes:
            # The warmed tails count against the node-wide budget like any
            # other cached entries: uncharged, 256 groups of large batch
            # entries held ~300 MB after a restart (548 MB RSS, 1M messages).
            budget.charge(storage, storage._cache_bytes)
        return storage

    @staticmethod
    def list_groups(kv: KVView) -> list[int]:
        """Ids of every group with raft state in ``kv``, ascending. Skips from
        group to group, so it costs one seek per group, not one per key."""
        groups: list[int] = []
        start = b"r"
        while True:
            found: bytes | None = None
            for key, _ in kv.iterate(start, b"s"):
                found = key
                break
            if found is None or len(found) < 3:
                return groups
            group_id = _U16.unpack_from(found, 1)[0]
            groups.append(group_id)
            if group_id == 0xFFFF:
                return groups
            start = group_prefix(group_id + 1)

    @staticmethod
    def stored_members(kv: KVView) -> set[str]:
        """Every node named as a voter or learner by a group stored in ``kv``."""
        members: set[str] = set()
        for group_id in LevelDBStorage.list_groups(kv):
            conf = _stored_conf_state(kv, group_id)
            members.update(conf.voters, conf.learners)
        return members

    @property
    def group_id(self) -> int:
        return self._group_id

    # --- LogStorage (read side, durable view) ----------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._view.hard_state, self._view.conf_state

    @property
    def hard_state(self) -> HardState:
        return self._view.hard_state

    @property
    def conf_state(self) -> ConfState:
        return self._view.conf_state

    def first_index(self) -> int:
        return self._view.first_index

    def last_index(self) -> int:
        return self._view.last_index

    def snapshot_meta(self) -> SnapshotMeta:
        return self._view.snapshot

    def term(self, index: int) -> int:
        view = self._view
        if index == view.snapshot.index:
            return view.snapshot.term
        if index < view.first_index:
            raise CompactedError(f"group {self._group_id}: index {index} is compacted")
        if index > view.last_index:
            raise UnavailableError(f"group {self._group_id}: index {index} > {view.last_index}")
        if index >= self._cache_first:
            return self._cache[index - self._cache_first].term
        return self._read_entry(index).term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        view = self._view
        if lo < view.first_index:
            raise CompactedError(f"group {self._group_id}: index {lo} is compacted")
        if hi > view.last_index + 1:
            raise UnavailableError(f"group {self._group_id}: index {hi - 1} > {view.last_index}")
        if lo >= hi:
            return []
        cache_first = self._cache_first
        if lo >= cache_first:
            found = self._cache[lo - cache_first : hi - cache_first]
        else:
            found = list(self._read_range(lo, min(hi, cache_first), max_bytes))
            if hi > cache_first and (max_bytes is None or _data_bytes(found) < max_bytes):
                found += self._cache[: hi - cache_first]
        return limit_entry_bytes(found, max_bytes)

    # --- write side: stage into a batch, commit the view once durable ---------------

    def stage_append(self, batch: WriteBatch, entries: list[Entry]) -> None:
        """Append ``entries`` (contiguous), first truncating every stored entry
        at or after ``entries[0].index`` that they do not overwrite."""
        view = self._staged or self._view
        if entries and entries[0].index <= view.snapshot.index:
            # Already committed and folded into the snapshot: nothing to write.
            entries = entries[view.snapshot.index + 1 - entries[0].index :]
        if not entries:
            return
        lo, hi = entries[0].index, entries[-1].index
        if lo > view.last_index + 1 or hi - lo + 1 != len(entries):
            raise ValueError(
                f"group {self._group_id}: cannot append [{lo}, {hi}] to log "
                f"[{view.first_index}, {view.last_index}]"
            )
        key_prefix, put, pack_index = self._prefix + b"e", batch.put, _U64.pack
        for entry in entries:  # hot path: one key and one record per entry, nothing else
            index_bytes = pack_index(entry.index)
            put(key_prefix + index_bytes, encode_entry_at(index_bytes, entry))
        for stale in range(hi + 1, view.last_index + 1):
            batch.delete(_entry_key(self._prefix, stale))
        self._staged = _View(view.first_index, hi, view.hard_state, view.conf_state, view.snapshot)
        if _may_have_followers(view.conf_state):
            self._on_commit.append((self._cache_append, entries))
        else:
            self._on_commit.append((self._cache_keep_last, entries[-1]))

    def stage_fold(self, batch: WriteBatch, entries: list[Entry]) -> bool:
        """Move the log's base past ``entries`` instead of storing them, for
        a group whose only member is this node, when the caller applies them
        in the same batch: nobody will read them back, neither a follower
        nor this node's apply, so writing them would only double the bytes
        written per append (the state machine stores the message too) and
        leave LevelDB a deletion to do at compaction. Stages nothing and
        returns False unless the group has one member and an empty log that
        ``entries`` continue, and none of them changes the membership."""
        view = self._staged or self._view
        if (
            _may_have_followers(view.conf_state)
            or view.first_index != view.last_index + 1
            or entries[0].index != view.first_index
            or any(entry.type is not EntryType.NORMAL for entry in entries)
        ):
            return False
        last = entries[-1]
        meta = SnapshotMeta(index=last.index, term=last.term, conf_state=view.conf_state)
        batch.put(self._prefix + b"s", encode_snapshot_meta(meta))
        self._staged = _View(last.index + 1, last.index, view.hard_state, view.conf_state, meta)
        self._on_commit.append((self._cache_reset, last.index + 1))
        return True

    def stage_hard_state(self, batch: WriteBatch, hs: HardState) -> None:
        batch.put(self._prefix + b"h", encode_hard_state(hs))
        v = self._staged or self._view  # positional: dataclasses.replace is slow here
        self._staged = _View(v.first_index, v.last_index, hs, v.conf_state, v.snapshot)

    def stage_conf_state(self, batch: WriteBatch, cs: ConfState) -> None:
        batch.put(self._prefix + b"c", encode_conf_state(cs))
        v = self._staged or self._view
        self._staged = _View(v.first_index, v.last_index, v.hard_state, cs, v.snapshot)

    def stage_snapshot(self, batch: WriteBatch, meta: SnapshotMeta) -> None:
        """Install ``meta`` as the log's base: the whole log is dropped and the
        membership becomes the snapshot's. The state machine's data is the
        caller's business (same batch)."""
        view = self._staged or self._view
        prefix = self._prefix
        batch.delete_range(_entry_key(prefix, 0), _entry_key(prefix, _MAX_INDEX))
        batch.put(prefix + b"s", encode_snapshot_meta(meta))
        batch.put(prefix + b"c", encode_conf_state(meta.conf_state))
        self._staged = _View(meta.index + 1, meta.index, view.hard_state, meta.conf_state, meta)
        self._on_commit.append((self._cache_reset, meta.index + 1))

    def stage_compact(self, batch: WriteBatch, index: int) -> None:
        """Drop entries ``<= index`` (which must be applied). The new base
        records ``index``, its term and the current membership: a snapshot sent
        from here is always the state machine's current state, never this."""
        view = self._staged or self._view
        if index <= view.snapshot.index:
            return
        if index > view.last_index:
            raise ValueError(f"group {self._group_id}: compact {index} > last {view.last_index}")
        record = batch.get(_entry_key(self._prefix, index))
        if record is None:
            raise CorruptLogError(self._group_id, index, "missing entry")
        term = decode_entry(self._group_id, index, record).term
        meta = SnapshotMeta(index=index, term=term, conf_state=view.conf_state)
        for compacted in range(view.first_index, index + 1):
            batch.delete(_entry_key(self._prefix, compacted))
        batch.put(self._prefix + b"s", encode_snapshot_meta(meta))
        self._staged = _View(index + 1, view.last_index, view.hard_state, view.conf_state, meta)
        self._on_commit.append((self._cache_drop_below, index + 1))

    def stage_destroy(self, batch: WriteBatch) -> None:
        """Delete every raft key of the group (it left this node)."""
        batch.delete_range(self._prefix, self._prefix + b"\xff")
        self._staged = _View(1, 0, HardState(), ConfState(), SnapshotMeta())
        self._on_commit.append((self._cache_reset, 1))

    def staged_first_index(self) -> int:
        """First index once what is staged is written (compaction decisions)."""
        return (self._staged or self._view).first_index

    def on_written(self) -> None:
        """The batch holding everything staged is durable: expose it."""
        if self._staged is not None:
            self._view = self._staged
            self._staged = None
        if self._on_commit:
            for action, argument in self._on_commit:
                action(argument)
            self._on_commit.clear()
            budget = self._budget
            if budget is not None:
                if _may_have_followers(self._view.conf_state):
                    budget.charge(self, self._cache_bytes)
                else:  # one entry at most: not worth a place in the budget
                    budget.forget(self)

    def on_write_failed(self) -> None:
        """The batch was not written: forget what was staged."""
        self._staged = None
        self._on_commit.clear()

    # --- incoming snapshot chunks -----------------------------------------------------

    def stage_incoming_chunk(self, batch: WriteBatch, seq: int, data: bytes) -> None:
        batch.put(staging_key(self._group_id, seq), data)

    def incoming_chunks(self, view: KVView, count: int) -> list[bytes] | None:
        """The ``count`` staged chunks in order, or None when any is missing
        (e.g. lost in a crash before they were synced)."""
        start = staging_key(self._group_id, 0)
        chunks = [value for _, value in view.iterate(start, staging_key(self._group_id, count))]
        return chunks if len(chunks) == count else None

    def stage_clear_incoming(self, batch: WriteBatch) -> None:
        batch.delete_range(self._prefix + b"x", self._prefix + b"y")

    # --- internals --------------------------------------------------------------------

    def _read_entry(self, index: int) -> Entry:
        record = self._kv.get(_entry_key(self._prefix, index))
        if record is None:
            raise CorruptLogError(self._group_id, index, "missing entry")
        return decode_entry(self._group_id, index, record)

    def _read_range(self, lo: int, hi: int, max_bytes: int | None) -> Iterator[Entry]:
        expected, total = lo, 0
        group_id, prefix = self._group_id, self._prefix
        for key, record in self._kv.iterate(_entry_key(prefix, lo), _entry_key(prefix, hi)):
            if _U64.unpack_from(key, 4)[0] != expected:
                raise CorruptLogError(group_id, expected, "missing entry")
            entry = decode_entry(group_id, expected, record)
            yield entry
            expected += 1
            total += len(entry.data)
            if max_bytes is not None and total >= max_bytes:
                return
        if expected != hi:
            raise CorruptLogError(group_id, expected, "missing entry")

    def _warm_cache(self) -> None:
        view = self._view
        count = min(256, self._cache_max_entries) if _may_have_followers(view.conf_state) else 1
        lo = max(view.first_index, view.last_index + 1 - count)
        if lo <= view.last_index:
            self._cache_append(list(self._read_range(lo, view.last_index + 1, None)))

    def _cache_append(self, entries: list[Entry]) -> None:
        cache, lo = self._cache, entries[0].index
        if lo < self._cache_first:
            self._cache_reset(lo)
        else:
            cut = lo - self._cache_first
            self._cache_bytes -= sum(len(e.data) for e in cache[cut:])
            del cache[cut:]
        cache.extend(entries)
        self._cache_bytes += sum(len(e.data) for e in entries)
        if len(cache) > self._cache_max_entries or self._cache_bytes > self._cache_max_bytes:
            self._cache_trim()

    def _cache_keep_last(self, last: Entry) -> None:
        # Keeps ``term(last_index)`` a memory read (commit and read-index
        # checks ask for it) at the cost of one entry.
        self._cache.clear()
        self._cache.append(last)
        self._cache_first = last.index
        self._cache_bytes = len(last.data)

    def _cache_trim(self) -> None:
        # Trim to 3/4 of both bounds so the O(n) front delete is amortized.
        keep_entries = self._cache_max_entries * 3 // 4
        keep_bytes = self._cache_max_bytes * 3 // 4
        cache, cut = self._cache, 0
        while cut < len(cache) and (
            len(cache) - cut > keep_entries or self._cache_bytes > keep_bytes
        ):
            self._cache_bytes -= len(cache[cut].data)
            cut += 1
        del cache[:cut]
        self._cache_first += cut

    def _cache_drop_below(self, index: int) -> None:
        if index > self._cache_first:
            cut = min(index - self._cache_first, len(self._cache))
            self._cache_bytes -= sum(len(e.data) for e in self._cache[:cut])
            del self._cache[:cut]
            self._cache_first += cut

    def drop_cache(self) -> None:
        """Forget the cached tail (the node-wide budget needs the memory)."""
        self._cache_reset(self._view.last_index + 1)

    def _cache_reset(self, first: int) -> None:
        self._cache.clear()
        self._cache_first = first
        self._cache_bytes = 0


class CacheBudget:
    """Caps the entry caches of all groups of a node together: when their
    total passes ``max_bytes``, the caches of the groups that appended least
    recently are dropped first (an idle group needs none)."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self._max_bytes = max_bytes
        self._sizes: OrderedDict[int, tuple[LevelDBStorage, int]] = OrderedDict()
        self._total = 0

    @property
    def total_bytes(self) -> int:
        return self._total

    def charge(self, storage: LevelDBStorage, cache_bytes: int) -> None:
        previous = self._sizes.pop(storage.group_id, (storage, 0))[1]
        self._sizes[storage.group_id] = (storage, cache_bytes)
        self._total += cache_bytes - previous
        while self._total > self._max_bytes and len(self._sizes) > 1:
            _, (victim, size) = self._sizes.popitem(last=False)
            if victim is storage:  # never evict the one appending now
                self._sizes[storage.group_id] = (storage, size)
                self._sizes.move_to_end(storage.group_id, last=False)
                break
            victim.drop_cache()
            self._total -= size

    def forget(self, storage: LevelDBStorage) -> None:
        _, size = self._sizes.pop(storage.group_id, (storage, 0))
        self._total -= size


def _may_have_followers(conf_state: ConfState) -> bool:
    """False only for a group known to have one member (hosted here, so this
    node): nobody replicates from its log. A replica that has not learned its
    membership yet (a new one catching up) caches: it applies from the cache."""
    return len(conf_state.voters) + len(conf_state.learners) != 1


def _data_bytes(entries: list[Entry]) -> int:
    return sum(len(e.data) for e in entries)
