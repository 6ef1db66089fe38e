"""Level 1: bare ``RaftNode`` cores over ``MemoryStorage``, driven by a small
persist → send → apply → advance loop that follows ``ready.py`` to the letter.

Owns the node software of a level-1 run: per node, one core per group, a toy
state machine (the ordered list of applied commands) and the snapshots it
takes. ``CoreDisk`` is the durable part (storage, state machine, snapshots) and
survives a crash; ``CoreProcess`` (cores, pending proposals, staged snapshot
data) does not. This level needs no NodeHost, codec or LevelDB: it isolates
the core's protocol logic. It must not check invariants beyond reporting to
the checker.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from fastpaca.errors import NotLeader
from fastpaca.raft.codec import decode_conf_change, encode_conf_change
from fastpaca.raft.core import RaftNode
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
from fastpaca.raft.ready import Ready, Role
from fastpaca.raft.storage import MemoryStorage

from .checker import InvariantViolation
from .params import raft_config
from .process import CrashPoint, GroupView, ProcessCrashed, Send, caught_up

if TYPE_CHECKING:
    from .simulator import NodeSlot, Simulator

__all__ = ["CoreLevel"]

Items = tuple[tuple[int, bytes], ...]
"""The toy state machine's state: (index, data) of each applied command."""

COMPACT_MIN_ENTRIES = 4
"""Snapshot a group only when this many entries were applied since the last."""


@dataclass(slots=True)
class GroupDisk:
    storage: MemoryStorage
    applied_index: int = 0
    items: list[tuple[int, bytes]] = field(default_factory=list)
    snapshots: dict[int, Items] = field(default_factory=dict)
    """Recent state machine snapshots by index (what a SNAPSHOT message carries)."""


@dataclass(slots=True)
class CoreDisk:
    groups: dict[int, GroupDisk] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message on the wire, with snapshot data riding beside a SNAPSHOT."""

    message: Message
    snapshot_items: Items | None = None


class CoreProcess:
    def __init__(self, node_id: str, disk: CoreDisk, sim: Simulator, level: CoreLevel) -> None:
        self.node_id = node_id
        self._disk = disk
        self._sim = sim
        self._level = level
        self._cores: dict[int, RaftNode] = {}
        self._pending: dict[tuple[int, int], tuple[int, bytes]] = {}
        """(group, index) → (term, data) of proposals made here, awaiting apply."""
        self._staged: dict[tuple[int, int], Items] = {}
        for group in sorted(disk.groups):
            self._start_core(group)

    def _start_core(self, group: int) -> None:
        gd = self._disk.groups[group]
        config = raft_config(self._sim.params, self.node_id, group, gd.applied_index)
        rng = random.Random(self._sim.rng.getrandbits(64))
        self._cores[group] = RaftNode(config, gd.storage, rng)
        self._sim.checker.reset_applied(self.node_id, group, gd.applied_index)

    # --- inputs --------------------------------------------------------------

    def tick(self) -> None:
        for group in sorted(self._cores):
            self._cores[group].tick()

    def receive(self, sender: str, payload: object) -> None:
        assert isinstance(payload, tuple)
        for envelope in payload:
            assert isinstance(envelope, Envelope)
            msg = envelope.message
            core = self._cores.get(msg.group_id)
            if core is None:
                continue  # unknown group: dropped, as a host would
            if msg.type is MessageType.SNAPSHOT and msg.snapshot is not None:
                assert envelope.snapshot_items is not None
                self._staged[(msg.group_id, msg.snapshot.index)] = envelope.snapshot_items
            core.step(msg)

    def peer_down(self, peer: str) -> None:
        for group in sorted(self._cores):
            core = self._cores[group]
            core.leader_unreachable(peer)
            core.report_unreachable(peer)

    def groups(self) -> list[int]:
        return sorted(self._cores)

    def ensure_group(self, group: int, voters: tuple[str, ...]) -> None:
        if group in self._disk.groups:
            return
        storage = MemoryStorage()
        if voters:
            # Bootstrap as NodeHost does: ADD_VOTER entries at term 1,
            # identical on every initial member, so joiners replay them.
            ordered = sorted(voters)
            bootstrap = [
                Entry(
                    index=position,
                    term=1,
                    type=EntryType.CONF_CHANGE,
                    data=encode_conf_change(ConfChange(op=ConfChangeOp.ADD_VOTER, node_id=node)),
                )
                for position, node in enumerate(ordered, start=1)
            ]
            storage.append(bootstrap)
            storage.set_hard_state(HardState(term=1, commit=len(bootstrap)))
            storage.set_conf_state(ConfState(voters=tuple(ordered)))
            self._sim.checker.observe_persisted(self.node_id, group, bootstrap, 0)
        self._disk.groups[group] = GroupDisk(storage)
        self._start_core(group)

    def remove_group(self, group: int) -> None:
        del self._disk.groups[group]
        del self._cores[group]
        self._pending = {k: v for k, v in self._pending.items() if k[0] != group}

    def replica_on_disk(self, group: int) -> bool:
        return group in self._disk.groups

    def _core(self, group: int) -> RaftNode:
        core = self._cores.get(group)
        if core is None:
            raise NotLeader(group, None)
        return core

    def propose(self, group: int, data: bytes) -> None:
        index, term = self._core(group).propose(data)
        self._pending[(group, index)] = (term, data)

    def propose_conf_change(self, group: int, change: ConfChange) -> None:
        self._core(group).propose_conf_change(change)

    def transfer_leadership(self, group: int, target: str) -> None:
        self._core(group).transfer_leadership(target)

    def read_index(self, group: int, context: bytes) -> None:
        self._core(group).read_index(context)

    def compact(self, group: int, *, min_entries: int = COMPACT_MIN_ENTRIES) -> None:
        gd = self._disk.groups[group]
        storage = gd.storage
        since = storage.snapshot_meta().index
        if gd.applied_index - since < max(min_entries, 1):
            return
        gd.snapshots = {i: s for i, s in gd.snapshots.items() if i >= since}
        gd.snapshots[gd.applied_index] = tuple(gd.items)
        storage.compact(gd.applied_index, storage.conf_state)

    # --- the driver iteration ----------------------------------------------------

    def iterate(self, send: Send, crash_at: str | None) -> bool:
        readies = [
            (group, core, core.ready())
            for group, core in sorted(self._cores.items())
            if core.has_ready()
        ]
        for group, core, rd in readies:  # a won election: leads from now on
            if rd.soft_state is not None and rd.soft_state.role is Role.LEADER:
                self._sim.checker.observe_leader(self.node_id, group, core.term)
                self._sim.checker.check_leader_completeness(
                    self.node_id,
                    group,
                    core.term,
                    (core.first_index, core.last_index, core.log_term),
                )
                self._sim.note(f"leader group {group} term {core.term}: {self.node_id}")
        # A planned crash waits for an iteration where it costs something.
        writes = any(rd.entries or rd.hard_state or rd.snapshot for _, _, rd in readies)
        applies = any(rd.committed_entries for _, _, rd in readies)
        if self._level.send_before_persist:  # a known driver bug, for test_bug_injection
            self._send_all(readies, send)
        if crash_at == CrashPoint.BEFORE_WRITE and writes:
            raise ProcessCrashed
        for group, core, rd in readies:
            self._persist(group, core, rd)
        if crash_at == CrashPoint.AFTER_WRITE and writes:
            raise ProcessCrashed
        if not self._level.send_before_persist:
            self._send_all(readies, send)
        if crash_at == CrashPoint.AFTER_SEND and applies:
            raise ProcessCrashed
        for group, core, rd in readies:
            self._apply(group, core, rd)
            core.advance(rd)
        return any(core.has_ready() for core in self._cores.values())

    def _persist(self, group: int, core: RaftNode, rd: Ready) -> None:
        gd = self._disk.groups[group]
        storage = gd.storage
        checker = self._sim.checker
        if rd.snapshot is not None:
            items = self._staged.pop((group, rd.snapshot.index))
            storage.apply_snapshot(rd.snapshot)
            gd.items = list(items)
            gd.applied_index = rd.snapshot.index
            gd.snapshots = {rd.snapshot.index: items}
            checker.observe_snapshot_installed(self.node_id, group, rd.snapshot.index)
        if rd.entries:
            storage.append(list(rd.entries))
            kept = [e for e in rd.entries if e.index >= storage.first_index()]
            if kept:
                prev_term = storage.term(kept[0].index - 1)
                checker.observe_persisted(self.node_id, group, kept, prev_term)
        if rd.hard_state is not None:
            old_commit = storage.hard_state.commit
            if rd.hard_state.commit > storage.last_index():
                raise InvariantViolation(
                    f"persisted commit: group {group} on {self.node_id} commits "
                    f"{rd.hard_state.commit} beyond its log ({storage.last_index()})"
                )
            storage.set_hard_state(rd.hard_state)
            lo = max(old_commit + 1, storage.first_index())
            for entry in storage.entries(lo, rd.hard_state.commit + 1):
                checker.observe_committed(self.node_id, group, entry, core.term)

    def _send_all(self, readies: list[tuple[int, RaftNode, Ready]], send: Send) -> None:
        outbox: dict[str, list[Envelope]] = {}
        snapshots_sent: list[tuple[RaftNode, str, bool]] = []
        for group, core, rd in readies:
            for msg in rd.messages:
                items = None
                if msg.type is MessageType.SNAPSHOT:
                    msg = self._fresh_snapshot(group, msg)
                    assert msg.snapshot is not None
                    items = self._disk.groups[group].snapshots.get(msg.snapshot.index)
                    snapshots_sent.append((core, msg.to, items is not None))
                    if items is None:
                        continue  # superseded by a newer snapshot: the core retries
                outbox.setdefault(msg.to, []).append(Envelope(msg, items))
        unreachable = {peer for peer in sorted(outbox) if not send(peer, tuple(outbox[peer]))}
        for core, peer, streamed in snapshots_sent:
            core.report_snapshot(peer, streamed and peer not in unreachable)
        for peer in sorted(unreachable):
            for core in self._cores.values():
                core.report_unreachable(peer)

    def _fresh_snapshot(self, group: int, msg: Message) -> Message:
        """Send the state as applied now rather than the core's older snapshot
        (the contract allows a newer one): an older snapshot may predate the
        membership change that added the receiver, which would then refuse it."""
        self.compact(group, min_entries=1)
        meta = self._disk.groups[group].storage.snapshot_meta()
        assert msg.snapshot is not None and meta.index >= msg.snapshot.index
        return replace(msg, snapshot=meta)

    def _apply(self, group: int, core: RaftNode, rd: Ready) -> None:
        gd = self._disk.groups[group]
        checker = self._sim.checker
        entries = rd.committed_entries
        checker.observe_applied(self.node_id, group, entries, core.term)
        for entry in entries:
            if entry.type is EntryType.CONF_CHANGE:
                conf = core.apply_conf_change(decode_conf_change(entry.data))
                gd.storage.set_conf_state(conf)
            elif entry.data:
                gd.items.append((entry.index, entry.data))
            gd.applied_index = entry.index
            self._maybe_ack(group, entry)
        for read in rd.read_states:
            checker.observe_read_served(self.node_id, group, read.context, read.index)

    def _maybe_ack(self, group: int, entry: Entry) -> None:
        proposed = self._pending.pop((group, entry.index), None)
        if proposed is not None and proposed == (entry.term, entry.data):
            self._sim.checker.observe_ack(group, entry.data, entry.index)

    # --- views -----------------------------------------------------------------------

    def view(self, group: int) -> GroupView | None:
        core = self._cores.get(group)
        if core is None:
            return None
        return GroupView(
            is_leader=core.is_leader,
            leader_id=core.leader_id,
            term=core.term,
            commit_index=core.commit_index,
            applied_index=self._disk.groups[group].applied_index,
            last_index=core.last_index,
            conf_state=core.conf_state,
            caught_up=caught_up(core),
        )

    def applied_state(self, group: int) -> object:
        return tuple(self._disk.groups[group].items)


class CoreLevel:
    """Level factory: durable ``CoreDisk`` per node, ``CoreProcess`` per life."""

    name = "core"

    def __init__(self, sim: Simulator, *, send_before_persist: bool = False) -> None:
        self._sim = sim
        self.send_before_persist = send_before_persist

    def new_durable(self, node_id: str) -> object:
        return CoreDisk()

    def start(self, slot: NodeSlot) -> CoreProcess:
        assert isinstance(slot.durable, CoreDisk)
        return CoreProcess(slot.node_id, slot.durable, self._sim, self)

    def on_crash(self, slot: NodeSlot) -> None:
        pass  # MemoryStorage and the state machine are written synchronously

    def disable_faults(self) -> None:
        pass

    def reference_state(self, group: int, log: list[Entry]) -> tuple[object, dict[int, object]]:
        items = tuple((e.index, e.data) for e in log if e.type is EntryType.NORMAL and e.data)
        return items, {}

    def close(self) -> None:
        pass
