"""The workload: client proposals, reads, membership changes, leadership
transfers and log compaction, all drawn from the simulator's rng.

Owns what clients and operators ask of the cluster during the safety phase.
Every proposal carries unique data (``g<group>.<n>``) so the checker can
follow it; a refused proposal is simply not acknowledged. It must not check
invariants (the checker does) nor reach into a node beyond ``NodeProcess``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fastpaca.errors import RaftError
from fastpaca.raft.messages import ConfChange, ConfChangeOp, ConfState

if TYPE_CHECKING:
    from .process import GroupView, NodeProcess
    from .simulator import Simulator

__all__ = ["Workload"]


class Workload:
    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._params = sim.params
        self._proposals = 0
        self._reads = 0
        self.transfers = 0
        self._removing: set[tuple[int, str]] = set()
        """(group, node) whose REMOVE was proposed: once applied on the leader,
        the node may delete its replica (a node merely not yet added may not)."""
        self._wiped: set[tuple[int, str]] = set()
        """(group, node) whose replica was deleted: it rejoins only on seeds
        with ``readd_wiped``, and only once the deletion is written
        (FINDINGS.md, 2 and 3)."""

    def start(self) -> None:
        p = self._params
        self._every(p.propose_interval_ms, "propose", self._propose)
        self._every(max(p.propose_interval_ms * 4, 20), "read", self._read)
        if p.conf_change_interval_ms:
            self._every(p.conf_change_interval_ms, "conf change", self._conf_change)
        if p.transfer_interval_ms:
            self._every(p.transfer_interval_ms, "transfer", self._transfer)
        if p.compact_interval_ms:
            self._every(p.compact_interval_ms, "compact", self._compact)

    def _every(self, mean_ms: int, label: str, action: Callable[[], None]) -> None:
        def fire() -> None:
            if self._sim.phase != "safety":
                return
            action()
            self._every(mean_ms, label, action)

        delay_ms = self._sim.rng.randint(1, 2 * mean_ms)
        self._sim.queue.schedule(delay_ms, f"client {label}", fire)

    # --- helpers -----------------------------------------------------------------

    def _leader_guess(self, group: int) -> tuple[str, NodeProcess] | None:
        """Like a client: ask some live node who leads, else pick one."""
        sim = self._sim
        up = sim.up_nodes()
        if not up:
            return None
        asked = sim.process(sim.rng.choice(up))
        assert asked is not None
        view = asked.view(group)
        target = view.leader_id if view is not None else None
        if target is None or sim.process(target) is None:
            target = sim.rng.choice(up)
        process = sim.process(target)
        assert process is not None
        return target, process

    def _leader(self, group: int) -> tuple[str, NodeProcess] | None:
        """The replica that believes it leads with the highest term."""
        best: tuple[int, str, NodeProcess] | None = None
        for node_id in self._sim.up_nodes():
            process = self._sim.process(node_id)
            assert process is not None
            view = process.view(group)
            if view is not None and view.is_leader and (best is None or view.term > best[0]):
                best = (view.term, node_id, process)
        return None if best is None else (best[1], best[2])

    def _random_group(self) -> int:
        return self._sim.rng.randrange(self._params.group_count)

    # --- actions -------------------------------------------------------------------

    def _propose(self) -> None:
        group = self._random_group()
        found = self._leader_guess(group)
        if found is None:
            return
        node_id, process = found
        self._proposals += 1
        padding = self._sim.rng.choice(self._params.padding_bytes)
        data = f"g{group}.{self._proposals}".encode() + b"." * padding
        try:
            process.propose(group, data)
        except RaftError as exc:
            self._sim.note(
                f"propose g{group}.{self._proposals} to {node_id} refused: {type(exc).__name__}"
            )
            return
        self._sim.note(f"propose g{group}.{self._proposals} to {node_id}")
        self._sim.wake(node_id)

    def _read(self) -> None:
        group = self._random_group()
        found = self._leader_guess(group)
        if found is None:
            return
        node_id, process = found
        self._reads += 1
        context = f"r{self._reads}".encode()
        self._sim.checker.observe_read_requested(group, context)
        try:
            process.read_index(group, context)
        except RaftError:
            return
        self._sim.wake(node_id)

    def _transfer(self) -> None:
        group = self._random_group()
        found = self._leader(group)
        if found is None:
            return
        node_id, process = found
        view = process.view(group)
        assert view is not None
        others = [v for v in view.conf_state.voters if v != node_id]
        if not others:
            return
        target = self._sim.rng.choice(sorted(others))
        self._sim.note(f"transfer group {group} {node_id} -> {target}")
        try:
            process.transfer_leadership(group, target)
        except RaftError:
            return
        self.transfers += 1
        self._sim.wake(node_id)

    def _compact(self) -> None:
        sim = self._sim
        for node_id in sim.up_nodes():
            process = sim.process(node_id)
            assert process is not None
            for group in process.groups():
                process.compact(group)
            sim.wake(node_id)

    def _conf_change(self) -> None:
        group = self._random_group()
        found = self._leader(group)
        if found is None:
            return
        node_id, process = found
        view = process.view(group)
        assert view is not None
        self._drop_removed_replicas(group, view.conf_state)
        change = self._next_change(group, view)
        if change is None:
            return
        if change.op is ConfChangeOp.REMOVE:
            self._removing.add((group, change.node_id))
        if change.op is ConfChangeOp.ADD_LEARNER:
            joiner = self._sim.process(change.node_id)
            if joiner is None:
                return  # its machine is down: an operator would wait
            if (group, change.node_id) in self._wiped and joiner.replica_on_disk(group):
                return  # its deletion is not written yet (FINDINGS.md, 3)
            self._removing.discard((group, change.node_id))
            self._wiped.discard((group, change.node_id))
            self._sim.ensure_group(change.node_id, group, ())
        self._sim.note(
            f"conf change group {group} via {node_id}: {change.op.name} {change.node_id}"
        )
        try:
            process.propose_conf_change(group, change)
        except RaftError as exc:
            self._sim.note(f"conf change refused: {type(exc).__name__}")
            return
        self._sim.wake(node_id)

    def _drop_removed_replicas(self, group: int, conf: ConfState) -> None:
        """Like the coordinator: a node whose removal is applied on the leader
        (so committed) deletes its replica, sometimes."""
        sim = self._sim
        members = set(conf.voters) | set(conf.learners)
        for node_id in sorted(sim.hosting):
            hosted = group in sim.hosting[node_id]
            up = sim.process(node_id) is not None
            removed = (group, node_id) in self._removing and node_id not in members
            if hosted and removed and up and sim.rng.random() < 0.7:
                sim.remove_group(node_id, group)
                self._wiped.add((group, node_id))

    def _next_change(self, group: int, view: GroupView) -> ConfChange | None:
        """Walk membership through learner → (caught up) voter → remove,
        keeping 2 to 4 voters, as the coordinator does."""
        rng = self._sim.rng
        voters, learners = view.conf_state.voters, view.conf_state.learners
        if learners:
            ready = sorted(set(learners) & set(view.caught_up))
            if not ready:
                return None  # promote only a learner that has caught up
            return ConfChange(op=ConfChangeOp.ADD_VOTER, node_id=rng.choice(ready))
        readd = self._params.readd_wiped
        outsiders = sorted(
            n
            for n in set(self._params.node_ids) - set(voters)
            if readd or (group, n) not in self._wiped
        )
        if len(voters) > 3 or (len(voters) == 3 and not outsiders):
            return ConfChange(op=ConfChangeOp.REMOVE, node_id=rng.choice(sorted(voters)))
        if outsiders:
            return ConfChange(op=ConfChangeOp.ADD_LEARNER, node_id=rng.choice(outsiders))
        return None
