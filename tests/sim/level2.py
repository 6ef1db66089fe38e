"""Level 2: real ``NodeHost``s over each node's simulated disk.

Owns the node software of a level-2 run: per node a ``NodeHost`` with the real
``LevelDBStorage``, wire codec, chunked snapshot transfer, compaction and the
test ``KVStateMachine``, all over ``SimDisk`` (``MemoryKV`` or a real
``LevelDBKV``). The loop is the production driver's, made synchronous:
``prepare`` → send a leader's early frames → write → send the other frames
→ ``finish`` → report unreachable peers. A crash drops the host; a
restart builds a new one from the disk alone (``open_groups``). It reports
what was written, acknowledged and read to the checker and checks nothing
itself.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING

from fastpaca.raft.host import HostConfig, Iteration, IterationResult, NodeHost
from fastpaca.raft.kv import MemoryKV, WriteBatch
from fastpaca.raft.leveldb import LevelDBStorage
from fastpaca.raft.messages import ConfChange, Entry
from fastpaca.raft.ready import Role
from fastpaca.raft.storage import CompactedError
from fastpaca.raft.testing import KVStateMachine, put_command

from .checker import InvariantViolation
from .disk import DiskFault, SimDisk
from .params import raft_config
from .process import CrashPoint, GroupView, ProcessCrashed, Send, caught_up

if TYPE_CHECKING:
    from .simulator import NodeSlot, Simulator

__all__ = ["HostLevel", "HostProcess", "proposal_command"]

KEYS_PER_GROUP = 5
"""Few keys, so puts overwrite each other and results (previous values) matter."""


def proposal_command(data: bytes) -> bytes:
    """The workload's unique proposal data as a put of the test state machine."""
    key = b"k%d" % (sum(data) % KEYS_PER_GROUP)
    return put_command(key, data)


def _send_all(send: Send, frames: dict[str, bytes]) -> list[str]:
    """Send each frame; the peers that could not take one."""
    return [peer for peer, frame in sorted(frames.items()) if not send(peer, frame)]


class HostProcess:
    def __init__(self, node_id: str, disk: SimDisk, sim: Simulator, level: HostLevel) -> None:
        self.node_id = node_id
        self._disk = disk
        self._sim = sim
        self._sm = KVStateMachine(disk)
        template = raft_config(sim.params, node_id, 0, 0)
        rng = random.Random(sim.rng.getrandbits(64))
        self._host = NodeHost(node_id, disk, self._sm, template, rng, level.host_config)
        self._pending: dict[tuple[int, int], tuple[int, bytes]] = {}
        self._observed_commit: dict[int, int] = {}
        for group in self._host.open_groups():
            sim.checker.reset_applied(node_id, group, self._sm.applied_index(group))

    # --- inputs --------------------------------------------------------------

    def tick(self) -> None:
        self._host.tick()

    def receive(self, sender: str, payload: object) -> None:
        assert isinstance(payload, bytes)
        self._host.receive(sender, payload)

    def peer_down(self, peer: str) -> None:
        # What RaftDriver._peer_down does on a connection-down callback.
        host = self._host
        for group in host.group_ids():
            host.core(group).leader_unreachable(peer)
        host.peer_unreachable(peer)

    def groups(self) -> list[int]:
        return self._host.group_ids()

    def ensure_group(self, group: int, voters: tuple[str, ...]) -> None:
        self._host.ensure_group(group, voters)

    def remove_group(self, group: int) -> None:
        self._host.remove_group(group)
        self._observed_commit.pop(group, None)

    def replica_on_disk(self, group: int) -> bool:
        return group in LevelDBStorage.list_groups(self._disk)

    def propose(self, group: int, data: bytes) -> None:
        command = proposal_command(data)
        index, term = self._host.propose(group, command)
        self._pending[(group, index)] = (term, command)

    def propose_conf_change(self, group: int, change: ConfChange) -> None:
        self._host.propose_conf_change(group, change)

    def transfer_leadership(self, group: int, target: str) -> None:
        self._host.transfer_leadership(group, target)

    def read_index(self, group: int, context: bytes) -> None:
        self._host.read_index(group, context)

    def compact(self, group: int) -> None:
        pass  # NodeHost compacts by itself (HostConfig thresholds)

    # --- the driver iteration ----------------------------------------------------

    def iterate(self, send: Send, crash_at: str | None) -> bool:
        host = self._host
        if not host.has_work():
            return False
        self._pass(send, crash_at)
        if host.has_apply_due():
            # The driver's apply pass: at once, with no new input in between.
            self._pass(send, crash_at)
        return host.has_work()

    def _pass(self, send: Send, crash_at: str | None) -> None:
        host = self._host
        iteration = host.prepare()
        self._observe_leaders(iteration)
        writes = bool(iteration.batch)
        applies = any(p.applied is not None for p in iteration.readies)
        # The production driver's order: a leader's early frames, the write,
        # every other frame, finish, then the peers that could not be reached.
        unreachable = _send_all(send, iteration.take_early_frames())
        if crash_at == CrashPoint.BEFORE_WRITE and writes:
            raise ProcessCrashed
        try:
            iteration.write()
        except DiskFault:
            host.abort(iteration)
            raise
        self._observe_written(iteration)
        if crash_at == CrashPoint.AFTER_WRITE and writes:
            raise ProcessCrashed
        unreachable += _send_all(send, iteration.frames())
        if crash_at == CrashPoint.AFTER_SEND and applies:
            raise ProcessCrashed
        self._observe_result(host.finish(iteration))
        for peer in sorted(set(unreachable)):
            host.peer_unreachable(peer)

    def _observe_leaders(self, iteration: Iteration) -> None:
        """A won election shows as a soft state in the next Ready: the node
        leads from that moment, written or not."""
        for processed in iteration.readies:
            if processed.ready is None:  # the lone voter's shortcut: no role change
                continue
            soft = processed.ready.soft_state
            if soft is not None and soft.role is Role.LEADER:
                group = processed.group_id
                core = self._host.core(group)
                term = core.term
                self._sim.checker.observe_leader(self.node_id, group, term)
                self._sim.checker.check_leader_completeness(
                    self.node_id, group, term, (core.first_index, core.last_index, core.log_term)
                )
                self._sim.note(f"leader group {group} term {term}: {self.node_id}")

    def _observe_written(self, iteration: Iteration) -> None:
        """What just became durable: installed snapshots, log entries,
        commit indexes and applied entries, group by group in write order."""
        checker = self._sim.checker
        for processed in iteration.readies:
            group, rd = processed.group_id, processed.ready
            core = self._host.core(group)
            if rd is None:
                # The lone voter's shortcut (``RaftNode.ready_alone``): its
                # applied entries were persisted and committed in this write.
                if processed.applied is None:
                    raise InvariantViolation(f"group {group}: shortcut without its apply")
                entries = list(processed.applied.entries)
                commit: int | None = entries[-1].index
            else:
                if rd.snapshot is not None:
                    checker.observe_snapshot_installed(self.node_id, group, rd.snapshot.index)
                entries = rd.entries
                commit = None if rd.hard_state is None else rd.hard_state.commit
            if entries:
                first = entries[0].index
                prev_term = core.log_term(first - 1)
                if prev_term or first == 1:
                    checker.observe_persisted(self.node_id, group, entries, prev_term)
                else:  # predecessor compacted away: check from the second entry on
                    checker.observe_persisted(self.node_id, group, entries[1:], entries[0].term)
            if commit is not None:
                self._observe_commit(group, commit)
            if processed.applied is not None:
                checker.observe_applied(self.node_id, group, processed.applied.entries, core.term)

    def _observe_commit(self, group: int, commit: int) -> None:
        core = self._host.core(group)
        if commit > core.last_index:
            raise InvariantViolation(
                f"persisted commit: group {group} on {self.node_id} commits {commit} "
                f"beyond its log ({core.last_index})"
            )
        lo = max(core.first_index, self._observed_commit.get(group, 0) + 1)
        self._observed_commit[group] = commit
        try:
            entries = core.log_entries(lo, commit + 1)
        except CompactedError:
            return
        for entry in entries:
            self._sim.checker.observe_committed(self.node_id, group, entry, core.term)

    def _observe_result(self, result: IterationResult) -> None:
        checker = self._sim.checker
        for batch in result.applied:
            for entry, outcome in zip(batch.entries, batch.results, strict=True):
                proposed = self._pending.pop((batch.group_id, entry.index), None)
                if proposed is not None and proposed == (entry.term, entry.data):
                    checker.observe_ack(batch.group_id, entry.data, entry.index, outcome)
        for group, read in result.read_states:
            checker.observe_read_served(self.node_id, group, read.context, read.index)

    # --- views -----------------------------------------------------------------------

    def view(self, group: int) -> GroupView | None:
        if not self._host.has_group(group):
            return None
        core = self._host.core(group)
        return GroupView(
            is_leader=core.is_leader,
            leader_id=core.leader_id,
            term=core.term,
            commit_index=core.commit_index,
            applied_index=self._sm.applied_index(group),
            last_index=core.last_index,
            conf_state=core.conf_state,
            caught_up=caught_up(core),
        )

    def applied_state(self, group: int) -> object:
        return self._sm.items(group)


class HostLevel:
    """Level factory: a ``SimDisk`` per node, a ``NodeHost`` per life."""

    name = "host"

    def __init__(self, sim: Simulator, directory: str, *, lie_about_sync: float = 0.0) -> None:
        self._sim = sim
        self._directory = directory
        self._lie_about_sync = lie_about_sync
        rng = sim.rng
        threshold = rng.choice((6, 12, 40, 20_000))
        chunk_bytes = rng.choice((24, 200, 256 * 1024))
        keep = rng.randint(0, threshold // 2)
        self.host_config = HostConfig(
            snapshot_chunk_bytes=chunk_bytes,
            compact_threshold_entries=threshold,
            compact_keep_entries=keep,
            # Derived, not drawn: a new draw would change every seed's run.
            compact_chunk_entries=(1, 3, 1_000)[keep % 3],
            snapshot_timeout_ticks=rng.choice((20, 60, 200)),
            send_leader_appends_early=rng.random() < 0.8,
        )
        self._disks: list[SimDisk] = []

    def new_durable(self, node_id: str) -> object:
        path = os.path.join(self._directory, node_id)
        os.makedirs(path, exist_ok=True)
        disk = SimDisk(
            storage=self._sim.params.storage,
            directory=path,
            rng=self._sim.rng,
            write_fault_rate=self._sim.params.write_fault_rate,
            lie_about_sync=self._lie_about_sync,
        )
        self._disks.append(disk)
        return disk

    def start(self, slot: NodeSlot) -> HostProcess:
        assert isinstance(slot.durable, SimDisk)
        return HostProcess(slot.node_id, slot.durable, self._sim, self)

    def on_crash(self, slot: NodeSlot) -> None:
        assert isinstance(slot.durable, SimDisk)
        slot.durable.crash()

    def disable_faults(self) -> None:
        for disk in self._disks:
            disk.write_fault_rate = 0.0

    def reference_state(self, group: int, log: list[Entry]) -> tuple[object, dict[int, object]]:
        kv = MemoryKV()
        reference = KVStateMachine(kv)
        batch = WriteBatch(kv)
        results = reference.apply(group, log, batch)
        kv.write(batch, sync=True)
        by_index = {entry.index: result for entry, result in zip(log, results, strict=True)}
        return reference.items(group), by_index

    def close(self) -> None:
        for disk in self._disks:
            disk.close()
