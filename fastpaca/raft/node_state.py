"""RaftConfig and NodeState: the fields every part of a RaftNode shares.

``RaftNode`` (``core.py``) is assembled from role-sized parts that each live
in their own module: ``election.py`` (terms, votes, role changes),
``replication.py`` (APPEND/SNAPSHOT flow on both sides, commit, heartbeats)
and ``readindex.py`` (linearizable reads). ``NodeState`` declares the state
they share, so each part type-checks on its own; ``RaftNode.__init__`` sets
it. Nothing here does IO.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastpaca.raft.messages import Entry, Message, MessageType, ReadState, SnapshotMeta

if TYPE_CHECKING:
    import random

    from fastpaca.raft.log import RaftLog
    from fastpaca.raft.messages import HardState
    from fastpaca.raft.progress import ProgressTracker
    from fastpaca.raft.readindex import PendingRead, ReadIndexQueue
    from fastpaca.raft.ready import Role, SoftState

__all__ = ["CAMPAIGN_TRANSFER", "FROM_LEADER", "VOTE_REQUESTS", "NodeState", "RaftConfig"]

CAMPAIGN_TRANSFER = b"transfer"
"""VOTE context of a campaign started by TIMEOUT_NOW: voters grant it even
while they still hear from a leader (the leader asked for it)."""

VOTE_REQUESTS = (MessageType.PRE_VOTE, MessageType.VOTE)
FROM_LEADER = (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT)


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftConfig:
    node_id: str
    group_id: int
    election_timeout_ticks: int = 10
    """Randomized in [T, 2T) per election, from the injected rng."""
    heartbeat_interval_ticks: int = 1
    max_msg_bytes: int = 1 << 20
    """Cap on entry data bytes per APPEND (always at least one entry)."""
    max_inflight_msgs: int = 64
    """Pipelining: APPENDs in flight per follower (flow control)."""
    max_uncommitted_bytes: int = 64 << 20
    """The leader refuses proposals (ProposalDropped) beyond this."""
    pre_vote: bool = True
    check_quorum: bool = True
    applied_index: int = 0
    """Where the state machine already is (restart)."""
    prompt_commit_notice: bool = True
    """When the leader's commit index moves, tell every follower at once
    with an empty APPEND (``COMMIT_ONLY``), so followers apply within a
    round trip. False: the new commit index rides on the next APPEND or
    heartbeat, and followers apply up to one heartbeat interval later. That
    saves one message per follower and one follower Ready per append, about
    a tenth of a loaded 3-node cluster's CPU, and costs nothing a client
    sees: requests are served by the leader, which applies at commit. A
    committed membership change is always announced at once (a removed or
    demoted follower must learn of it before heartbeats stop)."""


class NodeState:
    """Shared fields (set by ``RaftNode.__init__``) and shared helpers."""

    _config: RaftConfig
    _id: str
    _group_id: int
    _rng: random.Random
    _log: RaftLog
    _tracker: ProgressTracker
    _term: int
    _vote: str | None
    _leader_id: str | None
    _role: Role
    _step_role: Callable[[Message], None]
    """The current role's handler: _step_follower/_step_candidate/_step_leader."""
    _election_elapsed: int
    """Ticks since the last election timeout (leader) or since we last heard
    from a leader or granted a vote (others)."""
    _heartbeat_elapsed: int
    _ticks: int
    """Ticks since this node was built (heartbeat phase)."""
    _randomized_election_timeout: int
    _messages: list[Message]
    """Outbox, handed out with the next Ready."""
    _read_states: list[ReadState]
    _reads: ReadIndexQueue
    _reads_waiting_commit: list[PendingRead]
    """Reads that arrived before this leader committed an entry of its term."""
    _lead_transferee: str | None
    _pending_conf_index: int
    """Index of the last conf change proposed; a new one waits until applied."""
    _uncommitted_bytes: int
    _entries_to_broadcast: bool
    """New entries were proposed: send them with the next Ready (batching)."""
    _commit_to_broadcast: bool
    """The commit index moved: tell followers with the next Ready."""
    _read_heartbeat_pending: bool
    """New reads are queued: one heartbeat round with the next Ready."""
    _dropped: int
    _prev_soft: SoftState
    _prev_hard: HardState

    def _is_promotable(self) -> bool:
        return self._id in self._tracker.voters

    def _committed_in_current_term(self) -> bool:
        return self._log.term_or_zero(self._log.committed) == self._term

    def _send(
        self,
        msg_type: MessageType,
        to: str,
        *,
        term: int | None = None,
        index: int = 0,
        log_term: int = 0,
        entries: tuple[Entry, ...] = (),
        commit: int = 0,
        reject: bool = False,
        reject_hint: int = 0,
        context: bytes = b"",
        snapshot: SnapshotMeta | None = None,
    ) -> None:
        self._messages.append(
            Message(
                type=msg_type,
                group_id=self._group_id,
                sender=self._id,
                to=to,
                term=self._term if term is None else term,
                index=index,
                log_term=log_term,
                entries=entries,
                commit=commit,
                reject=reject,
                reject_hint=reject_hint,
                context=context,
                snapshot=snapshot,
            )
        )

    if TYPE_CHECKING:
        # Implemented by the other parts; declared so each part type-checks.
        def _become_follower(self, term: int, leader_id: str | None) -> None: ...
        def _hup(self, *, pre_vote: bool, transfer: bool) -> None: ...
        def _append_entries(self, entries: list[Entry]) -> tuple[int, int]: ...
        def _step_follower(self, msg: Message) -> None: ...
        def _step_candidate(self, msg: Message) -> None: ...
        def _step_leader(self, msg: Message) -> None: ...
        def _handle_from_leader(self, msg: Message) -> None: ...
        def _handle_read_index_request(self, msg: Message) -> None: ...
        def _maybe_commit(self) -> bool: ...
        def _maybe_send_append(self, to: str, *, send_if_empty: bool = True) -> bool: ...
        def _broadcast_heartbeat(self, context: bytes) -> None: ...
        def _start_read(self, read: PendingRead) -> None: ...
        def _answer_read(self, read: PendingRead) -> None: ...
