"""A tiny in-memory cluster for core tests: RaftNodes over MemoryStorage.

``Network`` does exactly what the IO layer must (see ``ready.py``): persist a
Ready into the node's MemoryStorage, queue its messages, apply its committed
entries (conf changes through ``apply_conf_change``), collect read states,
then ``advance``. Messages are delivered only when the test says so, and
links can be cut, so each test controls the interleaving exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastpaca.raft.codec import decode_conf_change
from fastpaca.raft.core import RaftConfig, RaftNode
from fastpaca.raft.messages import ConfState, Entry, EntryType, Message, MessageType, ReadState
from fastpaca.raft.ready import Ready, Role
from fastpaca.raft.storage import MemoryStorage

GROUP_ID = 7


@dataclass
class Replica:
    node: RaftNode
    storage: MemoryStorage
    applied: list[Entry] = field(default_factory=list)
    """Every entry applied, in order (snapshot installs reset it to the
    snapshot's contents, as a real state machine restore would)."""
    read_states: list[ReadState] = field(default_factory=list)
    readies: list[Ready] = field(default_factory=list)
    """Every Ready handed out, for tests that inspect what was persisted."""


class Network:
    def __init__(
        self,
        voters: Iterable[str],
        *,
        learners: Iterable[str] = (),
        seed: int = 1,
        **config: Any,
    ) -> None:
        self.conf = ConfState(voters=tuple(voters), learners=tuple(learners))
        self.config = config
        self.rng = random.Random(seed)
        self.replicas: dict[str, Replica] = {}
        self.queue: list[Message] = []
        self.cut: set[tuple[str, str]] = set()
        """Directed links that lose every message."""
        self.filter: Callable[[Message], bool] | None = None
        """Extra drop rule: return True to drop a message."""
        self.rewrite: Callable[[Message], Message] | None = None
        """Transforms each delivered message (e.g. the IO layer substituting
        a newer snapshot)."""
        self.snapshots: dict[int, list[Entry]] = {}
        """State-machine snapshots by index (what a real snapshot's data holds)."""
        for node_id in (*self.conf.voters, *self.conf.learners):
            self.add_node(node_id, conf=self.conf)

    # --- membership of the harness ----------------------------------------------------

    def add_node(self, node_id: str, *, conf: ConfState | None = None) -> Replica:
        storage = MemoryStorage(conf_state=conf or ConfState())
        return self._start(node_id, storage)

    def _start(self, node_id: str, storage: MemoryStorage, applied_index: int = 0) -> Replica:
        config = RaftConfig(
            node_id=node_id, group_id=GROUP_ID, applied_index=applied_index, **self.config
        )
        node = RaftNode(config, storage, random.Random(self.rng.random()))
        replica = Replica(node=node, storage=storage)
        self.replicas[node_id] = replica
        return replica

    def restart(self, node_id: str) -> RaftNode:
        """Crash and restart ``node_id`` from its storage (unsynced state lost:
        the harness persists every Ready fully, so nothing is)."""
        old = self.replicas[node_id]
        applied = old.applied
        replica = self._start(node_id, old.storage, applied[-1].index if applied else 0)
        replica.applied = applied
        self.queue = [m for m in self.queue if m.to != node_id and m.sender != node_id]
        return replica.node

    def node(self, node_id: str) -> RaftNode:
        return self.replicas[node_id].node

    def __getitem__(self, node_id: str) -> RaftNode:
        return self.replicas[node_id].node

    @property
    def nodes(self) -> list[RaftNode]:
        return [r.node for r in self.replicas.values()]

    def leaders(self) -> list[RaftNode]:
        return [n for n in self.nodes if n.role is Role.LEADER]

    def leader(self) -> RaftNode:
        leaders = self.leaders()
        assert len(leaders) == 1, f"expected one leader, got {[n.node_id for n in leaders]}"
        return leaders[0]

    # --- IO layer -------------------------------------------------------------------

    def process_ready(self, node_id: str) -> Ready | None:
        replica = self.replicas[node_id]
        node = replica.node
        if not node.has_ready():
            return None
        rd = node.ready()
        replica.readies.append(rd)
        storage = replica.storage
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
            replica.applied = list(self.snapshots.get(rd.snapshot.index, []))
        storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        self.queue.extend(rd.messages)
        for entry in rd.committed_entries:
            replica.applied.append(entry)
            if entry.type is EntryType.CONF_CHANGE:
                conf = node.apply_conf_change(decode_conf_change(entry.data))
                storage.set_conf_state(conf)
        replica.read_states.extend(rd.read_states)
        node.advance(rd)
        return rd

    def process_all(self) -> None:
        for node_id in list(self.replicas):
            self.process_ready(node_id)

    def deliver(self, *, only: Callable[[Message], bool] | None = None) -> int:
        """Deliver queued messages (those matching ``only``); returns how many."""
        pending, self.queue = self.queue, []
        delivered = 0
        for msg in pending:
            if only is not None and not only(msg):
                self.queue.append(msg)
                continue
            if self._drops(msg) or msg.to not in self.replicas:
                continue
            if self.rewrite is not None:
                msg = self.rewrite(msg)
            self.replicas[msg.to].node.step(msg)
            delivered += 1
        return delivered

    def _drops(self, msg: Message) -> bool:
        if (msg.sender, msg.to) in self.cut:
            return True
        return self.filter is not None and self.filter(msg)

    def take(self, msg_type: MessageType | None = None) -> list[Message]:
        """Remove and return queued messages (of ``msg_type``)."""
        taken = [m for m in self.queue if msg_type is None or m.type is msg_type]
        self.queue = [m for m in self.queue if m not in taken]
        return taken

    def stabilize(self, *, max_rounds: int = 1000) -> None:
        """Process and deliver until nothing is left to do."""
        for _ in range(max_rounds):
            self.process_all()
            if not self.queue and not any(n.has_ready() for n in self.nodes):
                return
            self.deliver()
        raise AssertionError("network did not stabilize")

    # --- faults ----------------------------------------------------------------------

    def isolate(self, node_id: str) -> None:
        for other in self.replicas:
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def partition(self, *groups: Iterable[str]) -> None:
        sides = [set(g) for g in groups]
        for side in sides:
            for other in sides:
                if side is not other:
                    self.cut.update((a, b) for a in side for b in other)

    def heal(self) -> None:
        self.cut.clear()
        self.filter = None

    # --- conveniences ----------------------------------------------------------------

    def elect(self, node_id: str) -> RaftNode:
        self[node_id].campaign()
        self.stabilize()
        assert self[node_id].is_leader, f"{node_id} did not win"
        return self[node_id]

    def tick(self, ticks: int = 1, *, nodes: Iterable[str] | None = None) -> None:
        """Tick (and stabilize after each tick)."""
        chosen = list(nodes) if nodes is not None else list(self.replicas)
        for _ in range(ticks):
            for node_id in chosen:
                self[node_id].tick()
            self.stabilize()

    def applied_data(self, node_id: str) -> list[bytes]:
        return [
            e.data for e in self.replicas[node_id].applied if e.type is EntryType.NORMAL and e.data
        ]

    def log(self, node_id: str) -> list[tuple[int, int]]:
        """(index, term) of every entry the node holds, stable or not."""
        node = self[node_id]
        return [(e.index, e.term) for e in node.log_entries(node.first_index, node.last_index + 1)]

    def compact(self, node_id: str, index: int) -> None:
        """Snapshot ``node_id``'s state machine at ``index`` and compact its log."""
        replica = self.replicas[node_id]
        self.snapshots[index] = [e for e in replica.applied if e.index <= index]
        replica.storage.compact(index)
