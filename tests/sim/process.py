"""What the simulator needs from one node's running software.

Owns the seam between the simulator (time, network, faults, workload) and a
level's node driver: level 1 drives bare ``RaftNode``s over ``MemoryStorage``
(``level1.py``), level 2 drives a real ``NodeHost`` over the node's KV
(``level2.py``). A process is volatile: a crash discards it and a restart
builds a new one from the node's durable state. Processes report to the
checker themselves, at the moment the thing happens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fastpaca.raft.core import RaftNode
from fastpaca.raft.messages import ConfChange, ConfState

__all__ = ["CrashPoint", "GroupView", "NodeProcess", "ProcessCrashed", "Send", "caught_up"]

Send = Callable[[str, object], bool]
"""Hand (peer, payload) to the network. False when the transport knows the
peer is unreachable (down, or the link is cut), as a real connection would;
random loss is silent. The driver then reports the peer unreachable."""


class ProcessCrashed(Exception):
    """Raised out of ``iterate`` when the planned crash point is reached."""


class CrashPoint:
    """Where inside one iteration a planned crash lands."""

    BEFORE_WRITE = "before_write"
    """The iteration's writes are lost."""
    AFTER_WRITE = "after_write"
    """Durable, but nothing sent or applied."""
    AFTER_SEND = "after_send"
    """Durable and sent; applies lost (they will be redone after restart)."""
    ALL: tuple[str, ...] = (BEFORE_WRITE, AFTER_WRITE, AFTER_SEND)


@dataclass(frozen=True, slots=True)
class GroupView:
    """One replica's volatile view of a group, for the workload and liveness."""

    is_leader: bool
    leader_id: str | None
    term: int
    commit_index: int
    applied_index: int
    last_index: int
    conf_state: ConfState
    caught_up: tuple[str, ...] = ()
    """On a leader: the members whose log reaches its commit index."""


class NodeProcess(Protocol):
    node_id: str

    def tick(self) -> None: ...

    def receive(self, sender: str, payload: object) -> None: ...

    def peer_down(self, peer: str) -> None:
        """The transport's connection to ``peer`` went down (the driver's
        peer-state callback): it crashed, or the link was cut or blipped."""
        ...

    def iterate(self, send: Send, crash_at: str | None) -> bool:
        """One driver iteration: persist, send, apply, advance what is ready;
        raise ``ProcessCrashed`` at ``crash_at`` if given. True when more
        work is already waiting (the simulator runs another iteration)."""
        ...

    def groups(self) -> list[int]: ...

    def view(self, group: int) -> GroupView | None: ...

    def ensure_group(self, group: int, voters: tuple[str, ...]) -> None:
        """Host ``group`` if not yet hosted: bootstrapped with ``voters``, or
        empty and waiting for its leader when ``voters`` is empty (a joiner)."""
        ...

    def remove_group(self, group: int) -> None:
        """Stop hosting ``group`` and delete its replica (log and state)."""
        ...

    def replica_on_disk(self, group: int) -> bool:
        """Whether ``group``'s log is in durable storage (a deletion may be
        staged but not yet written)."""
        ...

    def propose(self, group: int, data: bytes) -> None:
        """Raises a ``RaftError`` when refused; the ack is reported to the
        checker once the proposer learns the entry was applied."""
        ...

    def propose_conf_change(self, group: int, change: ConfChange) -> None: ...

    def transfer_leadership(self, group: int, target: str) -> None: ...

    def read_index(self, group: int, context: bytes) -> None: ...

    def compact(self, group: int) -> None:
        """Snapshot the state machine and compact the log (if the level does)."""
        ...

    def applied_state(self, group: int) -> object:
        """The group's applied state machine state, comparable with ``==``
        to ``Level.reference_state`` of the committed log."""
        ...


def caught_up(core: RaftNode) -> tuple[str, ...]:
    """A leader's members whose match index reaches its commit index."""
    if not core.is_leader:
        return ()
    conf = core.conf_state
    return tuple(
        node
        for node in sorted((*conf.voters, *conf.learners))
        if (progress := core.progress(node)) is not None and progress.match >= core.commit_index
    )
