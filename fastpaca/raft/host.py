"""NodeHost: every Raft group of one node, driven synchronously.

The deterministic heart of the IO layer. It owns this node's cores
(``RaftNode`` per group), their ``LevelDBStorage``s over the node's one KV,
the state machine calls and snapshot transfers, and turns the Readys of all
groups into one :class:`Iteration`: one ``WriteBatch`` plus one frame per
peer. It does no IO of its own beyond reading the KV, reads no clock, starts
no threads and never touches asyncio: ``driver.py`` (production) and the
simulator call it, in this order, never re-entrantly::

    host.tick() / host.receive(peer, frame) / host.propose(...)   # any number
    iteration = host.prepare()
    for peer, frame in iteration.take_early_frames().items(): ...  # optional
    iteration.write()               # the only write; may run in another thread
    for peer, frame in iteration.frames().items(): transport.send(...)
    result = host.finish(iteration) # advance; apply results, read states
    if host.has_apply_due(): ...    # the same steps again, no input between

A group whose only voter is this node takes its appends through
``RaftNode.ready_alone`` instead of a whole Ready (``_persist_alone``): the
same staging and apply, a fraction of the calls.

Persist-before-send is structural: ``Iteration.frames()`` and ``finish``
refuse to run until ``Iteration.write()`` returned. Only a leader's
APPEND/HEARTBEAT of an already durable term, which acknowledge nothing, may
be taken earlier (``take_early_frames``), so followers fsync in parallel.

Groups are bootstrapped with their initial voters as ADD_VOTER entries at
term 1 (identical on every initial member), so a replica added later that
replays the log from index 1 learns the same membership as everyone else.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from fastpaca.errors import InvariantViolation, NotLeader
from fastpaca.raft.codec import (
    CodecError,
    Frame,
    decode_conf_change,
    decode_frame,
    encode_conf_change,
)
from fastpaca.raft.core import RaftConfig, RaftNode
from fastpaca.raft.iteration import (
    AppliedBatch,
    HostedGroup,
    Iteration,
    IterationResult,
    ProcessedReady,
)
from fastpaca.raft.kv import KV, WriteBatch
from fastpaca.raft.leveldb import CacheBudget, LevelDBStorage
from fastpaca.raft.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
)
from fastpaca.raft.ready import Ready
from fastpaca.raft.snapshot_transfer import SnapshotExchange
from fastpaca.raft.statemachine import StateMachine
from fastpaca.raft.stats import HostStats

__all__ = ["AppliedBatch", "HostConfig", "Iteration", "IterationResult", "NodeHost"]

_EARLY_TYPES = (MessageType.APPEND, MessageType.HEARTBEAT)
"""A leader's messages that promise nothing about its own disk."""

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class HostConfig:
    snapshot_chunk_bytes: int = 256 * 1024
    compact_threshold_entries: int = 20_000
    """Compact once the log holds more than this many applied entries..."""
    compact_keep_entries: int = 5_000
    """...keeping this many below the applied index for slow followers."""
    compact_chunk_entries: int = 1_000
    """At most this many entries are deleted per group and write: a
    compaction of 15,000 entries in one batch held the loop for ~3 ms of
    staging and the writer for ~5 ms, a latency spike every few seconds on a
    busy node; in chunks it is the same work spread over the group's next
    applies."""
    snapshot_timeout_ticks: int = 200
    """A transfer with no progress (or no answer) for this long failed."""
    entry_cache_bytes: int = 16 << 20
    """All groups' caches of recent log entries together (replication reads).
    16 MiB holds several seconds of appends at full speed, which is what
    followers in REPLICATE state and the apply pass read; a follower further
    behind reads LevelDB (or gets a snapshot). 64 MiB cost ~80 MB more RSS
    (entry data plus objects) after the 1M-message load of
    ``bench/http_bench.py`` (298 vs 215 MB, same run) for no measured gain."""
    send_leader_appends_early: bool = True
    """Let a leader's APPEND/HEARTBEAT of a durable term go out before this
    iteration's write (``Iteration.take_early_frames``): halves commit latency."""


class NodeHost:
    def __init__(
        self,
        node_id: str,
        kv: KV,
        state_machine: StateMachine,
        raft_config_template: RaftConfig,
        rng: random.Random,
        config: HostConfig | None = None,
    ) -> None:
        self.node_id = node_id
        self._kv = kv
        self._sm = state_machine
        self._template = raft_config_template
        self._rng = rng
        self._config = config or HostConfig()
        self._groups: dict[int, HostedGroup] = {}
        self._dirty: set[int] = set()
        """Groups that may have a Ready: only these are looked at (idle is free)."""
        self._batch: WriteBatch | None = None
        """Writes made between iterations (bootstrap, chunks, removal)."""
        self._batch_must_sync = False
        self._bootstrapping: dict[int, LevelDBStorage] = {}
        self._solo: set[int] = set()
        """Single-voter groups that will campaign as soon as they can."""
        self._removing: set[int] = set()
        """Groups deleted in ``_batch``: the KV still shows them until it is written."""
        self._in_iteration = False
        self._apply_due = False
        """``finish`` left a group with committed entries not yet applied."""
        self._cache_budget = CacheBudget(self._config.entry_cache_bytes)
        self._send_early = self._config.send_leader_appends_early
        self.stats = HostStats()
        self._snapshots = SnapshotExchange(
            state_machine,
            self.stats,
            chunk_bytes=self._config.snapshot_chunk_bytes,
            timeout_ticks=self._config.snapshot_timeout_ticks,
        )

    # --- groups ---------------------------------------------------------------------

    def open_groups(self) -> list[int]:
        """Rebuild every group found in the KV (after a restart or crash)."""
        for group_id in LevelDBStorage.list_groups(self._kv):
            if group_id not in self._groups:
                self._add_group(
                    group_id, LevelDBStorage.open(self._kv, group_id, budget=self._cache_budget)
                )
        return self.group_ids()

    def ensure_group(self, group_id: int, voters: Sequence[str]) -> None:
        """Host ``group_id``. A group with no state yet is bootstrapped with
        ``voters`` (written with the next iteration, the core starts after);
        empty ``voters`` joins an existing group and waits for its leader.

        ``voters`` must be the group's *initial* membership, the same list on
        every initial member: the bootstrap entries are identical (index,
        term 1) everywhere, and a different list would break log matching. A
        replica added later (learner first) must pass no voters."""
        self._require_idle()
        if group_id in self._groups or group_id in self._bootstrapping:
            return
        if group_id in self._removing:
            raise InvariantViolation(f"group {group_id} is being removed; ensure it after a write")
        storage = LevelDBStorage.open(self._kv, group_id, budget=self._cache_budget)
        if not voters or not _is_blank(storage):
            self._add_group(group_id, storage)
            return
        ordered = sorted(set(voters))
        add_voters = [
            Entry(
                index=position,
                term=1,
                type=EntryType.CONF_CHANGE,
                data=encode_conf_change(ConfChange(op=ConfChangeOp.ADD_VOTER, node_id=node)),
            )
            for position, node in enumerate(ordered, start=1)
        ]
        batch = self._pending_batch()
        storage.stage_append(batch, add_voters)
        storage.stage_hard_state(batch, HardState(term=1, commit=len(add_voters)))
        storage.stage_conf_state(batch, ConfState(voters=tuple(ordered)))
        self._batch_must_sync = True
        self._bootstrapping[group_id] = storage

    def remove_group(self, group_id: int) -> None:
        """Stop hosting ``group_id`` and delete its log and state (next write)."""
        self._require_idle()
        group = self._groups.pop(group_id, None)
        self._bootstrapping.pop(group_id, None)
        storage = (
            group.storage
            if group
            else LevelDBStorage.open(self._kv, group_id, budget=self._cache_budget)
        )
        batch = self._pending_batch()
        storage.stage_destroy(batch)
        self._cache_budget.forget(storage)
        self._sm.restore(group_id, 0, (), batch)
        self._snapshots.drop_group(group_id)
        self._dirty.discard(group_id)
        self._solo.discard(group_id)
        self._removing.add(group_id)

    def group_ids(self) -> list[int]:
        return sorted(self._groups)

    def core(self, group_id: int) -> RaftNode:
        """The group's core (read-only use: tests, metrics, the driver's queries)."""
        return self._group(group_id).core

    def has_group(self, group_id: int) -> bool:
        return group_id in self._groups

    def leader_of(self, group_id: int) -> str | None:
        group = self._groups.get(group_id)
        return group.core.leader_id if group else None

    def is_leader(self, group_id: int) -> bool:
        group = self._groups.get(group_id)
        return group is not None and group.core.is_leader

    @property
    def dropped_by_cores(self) -> int:
        return sum(group.core.dropped_messages for group in self._groups.values())

    # --- input ----------------------------------------------------------------------

    def tick(self) -> None:
        dirty = self._dirty
        for group_id, group in self._groups.items():
            if group.core.tick():
                dirty.add(group_id)
        for group_id, peer in self._snapshots.sender.tick():
            self.stats.snapshot_failures += 1
            if group_id in self._groups:
                self._groups[group_id].core.report_snapshot(peer, False)
                dirty.add(group_id)
        for group_id in self._snapshots.receiver.tick():
            if group_id in self._groups:
                self._groups[group_id].storage.stage_clear_incoming(self._pending_batch())

    def receive(self, peer: str, data: bytes) -> None:
        """Decode and step a frame from ``peer``; ``CodecError`` if malformed
        (the caller closes that connection)."""
        self.receive_frame(peer, decode_frame(data))

    def receive_frame(self, peer: str, frame: Frame) -> None:
        self._require_idle()
        if frame.sender != peer:
            raise CodecError(f"frame from {peer} claims to come from {frame.sender}")
        if frame.to != self.node_id:
            self.stats.dropped_misaddressed += 1
            return
        for status in frame.statuses:
            group = self._groups.get(status.group_id)
            if group is not None and self._snapshots.on_status(peer, status):
                group.core.report_snapshot(peer, status.success)
                self._dirty.add(status.group_id)
        for chunk in frame.chunks:
            group = self._groups.get(chunk.group_id)
            if group is None:
                self.stats.dropped_unknown_group += 1
            else:
                self._snapshots.on_chunk(peer, chunk, group.storage, self._pending_batch())
        for msg in frame.messages:
            group = self._groups.get(msg.group_id)
            if group is None:
                self.stats.dropped_unknown_group += 1
            elif msg.type is not MessageType.SNAPSHOT or self._snapshots.on_snapshot_message(
                group.storage, msg, self._pending_batch()
            ):
                group.core.step(msg)
                self._dirty.add(msg.group_id)

    def peer_unreachable(self, peer: str) -> None:
        """A send to ``peer`` failed or its connection went down."""
        for group in self._groups.values():
            group.core.report_unreachable(peer)
        for group_id in self._snapshots.sender.drop_peer(peer):
            self.stats.snapshot_failures += 1
            if group_id in self._groups:
                self._groups[group_id].core.report_snapshot(peer, False)
        self._dirty.update(self._groups)

    def propose(self, group_id: int, data: bytes) -> tuple[int, int]:
        """(index, term) of the new entry; ``NotLeader``/``ProposalDropped``."""
        index_term = self._leader_core(group_id).propose(data)
        self._dirty.add(group_id)
        return index_term

    def propose_many(self, group_id: int, commands: Sequence[bytes]) -> tuple[int, int]:
        """(index of the first, term) of the new entries, all or none; see
        ``RaftNode.propose_many``."""
        first_term = self._leader_core(group_id).propose_many(commands)
        self._dirty.add(group_id)
        return first_term

    def propose_conf_change(self, group_id: int, cc: ConfChange) -> tuple[int, int]:
        index_term = self._leader_core(group_id).propose_conf_change(cc)
        self._dirty.add(group_id)
        return index_term

    def read_index(self, group_id: int, context: bytes) -> None:
        self._leader_core(group_id).read_index(context)
        self._dirty.add(group_id)

    def is_readable_at_once(self, group_id: int) -> bool:
        """A linearizable read of ``group_id`` may read the KV right now: this
        node is the group's only voter and leader (``read_index_alone``) and
        has applied up to that read index, so every write acknowledged so far
        is in the KV. Never true for a group whose apply is in a write under
        way (committed in ``prepare``, applied in ``finish``). Callable at
        any time, mid-iteration too: it reads, never changes."""
        group = self._groups.get(group_id)
        if group is None:
            return False
        index = group.core.read_index_alone()
        return index is not None and group.core.applied_index >= index

    def transfer_leadership(self, group_id: int, to: str) -> None:
        self._leader_core(group_id).transfer_leadership(to)
        self._dirty.add(group_id)

    def campaign(self, group_id: int) -> None:
        self._group(group_id).core.campaign()
        self._dirty.add(group_id)

    def has_work(self) -> bool:
        """True when ``prepare`` may produce something (the driver's wake-up test)."""
        return bool(
            self._dirty or self._batch or self._bootstrapping or self._snapshots.has_statuses()
        )

    def has_apply_due(self) -> bool:
        """True when the last ``finish`` left committed entries unapplied:
        typically a leader whose own durable copy completed the quorum in
        ``advance``, its followers having answered before its write ended.
        (A group whose only voter is this node commits in ``ready`` and
        applies in the same write.) The driver then runs one more iteration
        at once, without taking new input, so those entries are applied and
        their results released after this iteration's write rather than
        after the next one's."""
        return self._apply_due

    # --- the iteration ----------------------------------------------------------------

    def prepare(self) -> Iteration:
        """Collect every group's Ready into one batch and one frame per peer."""
        self._require_idle()
        batch = self._batch if self._batch is not None else WriteBatch(self._kv)
        must_sync = self._batch_must_sync
        self._batch, self._batch_must_sync = None, False
        self._removing.clear()  # from here on the deletes are in this iteration's write
        self._apply_due = False
        readies: list[ProcessedReady] = []
        early: dict[str, list[Message]] = {}
        late: dict[str, list[Message]] = {}
        for group_id in sorted(self._dirty):
            group = self._groups.get(group_id)
            if group is None:
                continue
            alone = group.core.ready_alone()
            if alone is not None:
                readies.append(self._persist_alone(group_id, group, *alone, batch))
                must_sync = True
                continue
            only_messages = group.core.take_messages_if_only()
            if only_messages is not None:
                # Nothing to persist or advance (heartbeats, their answers).
                self._route(group, only_messages, self._durable_term(group), early, late)
                continue
            if not group.core.has_ready():
                continue
            rd = group.core.ready()
            durable_term = self._durable_term(group)  # read before staging
            applied = self._persist(group_id, group, rd, batch)
            self._route(group, rd.messages, durable_term, early, late)
            must_sync = must_sync or rd.must_sync
            readies.append(ProcessedReady(group_id, group, rd, applied))
        self._dirty.clear()
        self._snapshots.answer_declined(self._storage_of, batch)
        chunks, statuses = self._snapshots.outgoing(late)
        bootstrapped, self._bootstrapping = self._bootstrapping, {}
        self._in_iteration = True
        return Iteration(
            node_id=self.node_id,
            kv=self._kv,
            batch=batch,
            must_sync=must_sync,
            early=early,
            late=late,
            chunks=chunks,
            statuses=statuses,
            readies=readies,
            bootstrapped=bootstrapped,
        )

    def finish(self, iteration: Iteration) -> IterationResult:
        """After the write (and the sends): expose the written state, advance
        every core, and hand back apply results, read states, role changes."""
        if not iteration.written:
            raise InvariantViolation("finish before the batch was written")
        result = IterationResult()
        for group_id, group, rd, applied in iteration.readies:
            group.storage.on_written()
            core = group.core
            if rd is None:  # the lone voter's shortcut: entries persisted and applied
                if applied is None:
                    raise InvariantViolation(f"group {group_id}: shortcut without its apply")
                core.advance_alone(applied.entries[-1])
                result.applied.append(applied)
                if core.has_ready():  # e.g. a membership change it applied
                    self._dirty.add(group_id)
                continue
            core.advance(rd)
            self._dirty.add(group_id)  # e.g. the leader's commit moved in advance
            if core.commit_index > core.applied_index:
                self._apply_due = True
            if applied is not None:
                result.applied.append(applied)
            if rd.soft_state is not None:
                result.soft_states.append((group_id, rd.soft_state))
            result.read_states.extend((group_id, rs) for rs in rd.read_states)
        for group_id, storage in iteration.bootstrapped.items():
            storage.on_written()
            self._add_group(group_id, storage)
        for group_id in sorted(self._solo):
            self._maybe_campaign_alone(group_id)
        self._in_iteration = False
        return result

    def abort(self, iteration: Iteration) -> None:
        """The write failed: forget what was staged. The cores have handed out
        Readys that were never persisted, so this host must not be used again."""
        for processed in iteration.readies:
            processed.group.storage.on_write_failed()
        self._in_iteration = False

    def _route(
        self,
        group: HostedGroup,
        messages: list[Message],
        durable_term: int,
        early: dict[str, list[Message]],
        late: dict[str, list[Message]],
    ) -> None:
        """Sort a group's messages: snapshot streams, leader traffic of a
        term already durable (may leave before the write), the rest."""
        send_early = self._send_early
        for msg in messages:
            if msg.type is MessageType.SNAPSHOT:
                self._snapshots.start(group.storage, msg)
            elif send_early and msg.type in _EARLY_TYPES and msg.term <= durable_term:
                early.setdefault(msg.to, []).append(msg)
            else:
                late.setdefault(msg.to, []).append(msg)

    @staticmethod
    def _durable_term(group: HostedGroup) -> int:
        """The term a leader is known to hold durably (-1: not a leader, so
        nothing of it goes early). Read before staging this iteration."""
        return group.storage.hard_state.term if group.core.is_leader else -1

    # --- persist and apply ------------------------------------------------------------

    def _persist(
        self, group_id: int, group: HostedGroup, rd: Ready, batch: WriteBatch
    ) -> AppliedBatch | None:
        """Steps 1 and 3 of ``ready.py`` into the batch: install, append,
        hard state, then apply (the state machine writes into the same batch)."""
        if rd.snapshot is not None:
            self._snapshots.install(group.storage, rd.snapshot, batch)
        if rd.entries and not (
            self._applied_at_once(rd) and group.storage.stage_fold(batch, rd.entries)
        ):
            group.storage.stage_append(batch, rd.entries)
        if rd.hard_state is not None:
            group.storage.stage_hard_state(batch, rd.hard_state)
        if rd.committed_entries:
            return self._apply(group_id, group, rd.committed_entries, batch)
        return None

    def _persist_alone(
        self,
        group_id: int,
        group: HostedGroup,
        entries: list[Entry],
        hard_state: HardState,
        batch: WriteBatch,
    ) -> ProcessedReady:
        """``_persist`` for ``RaftNode.ready_alone``: the new entries (folded
        into the log's base where possible), the commit, and their apply."""
        storage = group.storage
        if not storage.stage_fold(batch, entries):
            storage.stage_append(batch, entries)
        storage.stage_hard_state(batch, hard_state)
        return ProcessedReady(group_id, group, None, self._apply(group_id, group, entries, batch))

    @staticmethod
    def _applied_at_once(rd: Ready) -> bool:
        """Every new entry of ``rd`` is applied by this same Ready (the only
        voter commits its entries in the write that persists them)."""
        committed = rd.committed_entries
        return (
            rd.snapshot is None
            and bool(committed)
            and committed[0].index <= rd.entries[0].index
            and committed[-1].index >= rd.entries[-1].index
        )

    def _apply(
        self, group_id: int, group: HostedGroup, entries: list[Entry], batch: WriteBatch
    ) -> AppliedBatch:
        results = self._sm.apply(group_id, entries, batch)
        if len(results) != len(entries):
            raise InvariantViolation(
                f"state machine gave {len(results)} results for {len(entries)}"
            )
        for position, entry in enumerate(entries):
            if entry.type is EntryType.CONF_CHANGE:
                conf = group.core.apply_conf_change(decode_conf_change(entry.data))
                group.storage.stage_conf_state(batch, conf)
                results[position] = conf
        self._maybe_compact(group, entries[-1].index, batch)
        return AppliedBatch(group_id, entries, results)

    def _maybe_compact(self, group: HostedGroup, applied: int, batch: WriteBatch) -> None:
        """Once the log holds more than the threshold, compact it down to
        ``compact_keep_entries`` below ``applied``, one chunk per apply of
        this group (a group that goes idle mid-way finishes with its next
        append; its log meanwhile holds no more than the threshold)."""
        config = self._config
        first = group.storage.staged_first_index()
        if group.compact_to < first and applied - first + 1 > config.compact_threshold_entries:
            group.compact_to = applied - config.compact_keep_entries
        elif group.compact_to < first <= applied and group.core.is_only_member():
            # Nobody reads this log back: empty it, and its next entries
            # are folded into the base (``LevelDBStorage.stage_fold``).
            group.compact_to = applied
        if group.compact_to >= first:
            chunk_end = first + config.compact_chunk_entries - 1
            group.storage.stage_compact(batch, min(group.compact_to, chunk_end))

    # --- helpers ----------------------------------------------------------------------

    def _add_group(self, group_id: int, storage: LevelDBStorage) -> None:
        config = replace(
            self._template,
            node_id=self.node_id,
            group_id=group_id,
            applied_index=self._sm.applied_index(group_id),
        )
        core = RaftNode(config, storage, random.Random(self._rng.getrandbits(64)))
        self._groups[group_id] = HostedGroup(core, storage)
        self._dirty.add(group_id)
        if core.conf_state.voters == (self.node_id,):
            self._solo.add(group_id)
            self._maybe_campaign_alone(group_id)

    def _maybe_campaign_alone(self, group_id: int) -> None:
        """A group whose only voter is this node need not wait an election
        timeout. The core refuses to campaign with a committed conf change
        unapplied (e.g. the bootstrap entries), so retry after each apply."""
        core = self._groups[group_id].core
        if core.applied_index >= core.commit_index:
            self._solo.discard(group_id)
            core.campaign()
            self._dirty.add(group_id)

    def _storage_of(self, group_id: int) -> LevelDBStorage | None:
        group = self._groups.get(group_id)
        return group.storage if group else None

    def _pending_batch(self) -> WriteBatch:
        if self._batch is None:
            self._batch = WriteBatch(self._kv)
        return self._batch

    def _group(self, group_id: int) -> HostedGroup:
        group = self._groups.get(group_id)
        if group is None:
            raise NotLeader(group_id, None)
        return group

    def _leader_core(self, group_id: int) -> RaftNode:
        self._require_idle()
        return self._group(group_id).core

    def _require_idle(self) -> None:
        if self._in_iteration:
            raise InvariantViolation("NodeHost used between prepare() and finish()")


def _is_blank(storage: LevelDBStorage) -> bool:
    hard_state, conf_state = storage.initial_state()
    return (
        storage.last_index() == 0
        and storage.snapshot_meta().index == 0
        and hard_state.term == 0
        and not conf_state.voters
        and not conf_state.learners
    )
