"""RaftNode: the IO-free Raft state machine of one group.

Owns roles, terms, votes, elections (pre-vote, check-quorum, leader
stickiness), replication decisions, commit, ReadIndex, snapshots sent and
received, membership and leadership transfer. Work comes in through
``step``/``tick``/``propose``/...; work goes out as a ``Ready`` (see
``ready.py`` for the persist → send → apply → advance contract).

Must not do IO, read a clock or use global randomness: time is ticks and the
election jitter comes from the injected ``random.Random``. Bad or stale input
is dropped and counted, never raised; broken invariants raise
``InvariantViolation``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastpaca.errors import InvariantViolation, NotLeader, ProposalDropped
from fastpaca.raft.codec import decode_conf_change, encode_conf_change
from fastpaca.raft.log import RaftLog
from fastpaca.raft.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    SnapshotMeta,
)
from fastpaca.raft.progress import Progress, ProgressState, ProgressTracker, VoteResult
from fastpaca.raft.readindex import PendingRead, ReadIndexQueue
from fastpaca.raft.ready import Ready, Role, SoftState
from fastpaca.raft.storage import CompactedError, LogStorage

if TYPE_CHECKING:
    import random

__all__ = ["CAMPAIGN_TRANSFER", "RaftConfig", "RaftNode"]

CAMPAIGN_TRANSFER = b"transfer"
"""VOTE context of a campaign started by TIMEOUT_NOW: voters grant it even
while they still hear from a leader (the leader asked for it)."""

_MAX_APPLY_BYTES = 4 << 20
"""Data handed out to apply per Ready: bounds one driver iteration's work."""

_VOTE_REQUESTS = (MessageType.PRE_VOTE, MessageType.VOTE)
_FROM_LEADER = (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT)
_RESPONSES = (
    MessageType.PRE_VOTE_RESP,
    MessageType.VOTE_RESP,
    MessageType.APPEND_RESP,
    MessageType.HEARTBEAT_RESP,
    MessageType.READ_INDEX,
)


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


class RaftNode:
    def __init__(self, config: RaftConfig, storage: LogStorage, rng: random.Random) -> None:
        if config.election_timeout_ticks <= config.heartbeat_interval_ticks:
            raise ValueError("election timeout must exceed the heartbeat interval")
        self._config = config
        self._id = config.node_id
        self._group_id = config.group_id
        self._rng = rng
        hard_state, conf_state = storage.initial_state()
        self._log = RaftLog(storage, committed=hard_state.commit, applied=config.applied_index)
        self._tracker = ProgressTracker(conf_state, max_inflight=config.max_inflight_msgs)
        self._term = hard_state.term
        self._vote = hard_state.vote
        self._leader_id: str | None = None
        self._role = Role.FOLLOWER
        self._step_role: Callable[[Message], None] = self._step_follower
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_election_timeout = config.election_timeout_ticks
        self._messages: list[Message] = []
        self._read_states: list[ReadState] = []
        self._reads = ReadIndexQueue()
        self._reads_waiting_commit: list[PendingRead] = []
        self._lead_transferee: str | None = None
        self._pending_conf_index = 0
        self._uncommitted_bytes = 0
        self._entries_to_broadcast = False
        self._commit_to_broadcast = False
        self._read_heartbeat_pending = False
        self._dropped = 0
        self._prev_soft = SoftState(leader_id=None, role=Role.FOLLOWER)
        self._prev_hard = HardState(term=self._term, vote=self._vote, commit=self._log.committed)
        self._reset_randomized_election_timeout()

    # --- read-only properties -------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._id

    @property
    def group_id(self) -> int:
        return self._group_id

    @property
    def term(self) -> int:
        return self._term

    @property
    def vote(self) -> str | None:
        return self._vote

    @property
    def role(self) -> Role:
        return self._role

    @property
    def leader_id(self) -> str | None:
        return self._leader_id

    @property
    def is_leader(self) -> bool:
        return self._role is Role.LEADER

    @property
    def commit_index(self) -> int:
        return self._log.committed

    @property
    def applied_index(self) -> int:
        return self._log.applied

    @property
    def last_index(self) -> int:
        return self._log.last_index()

    @property
    def first_index(self) -> int:
        return self._log.first_index()

    @property
    def conf_state(self) -> ConfState:
        return self._tracker.conf_state

    @property
    def dropped_messages(self) -> int:
        return self._dropped

    @property
    def lead_transferee(self) -> str | None:
        return self._lead_transferee

    def progress(self, node_id: str) -> Progress | None:
        """The leader's view of ``node_id`` (tests, metrics); None if unknown."""
        return self._tracker.progress.get(node_id)

    def log_term(self, index: int) -> int:
        """Term of entry ``index`` (0 when compacted or missing)."""
        return self._log.term_or_zero(index)

    def log_entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``[lo, hi)`` of the local log (stable or not), for tests and tools."""
        return self._log.entries(lo, hi)

    # --- time ---------------------------------------------------------------------

    def tick(self) -> None:
        if self._role is Role.LEADER:
            self._tick_heartbeat()
            return
        self._election_elapsed += 1
        if self._election_elapsed >= self._randomized_election_timeout and self._is_promotable():
            self._election_elapsed = 0
            self._hup(pre_vote=self._config.pre_vote, transfer=False)

    def _tick_heartbeat(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self._config.election_timeout_ticks:
            self._election_elapsed = 0
            if self._config.check_quorum and not self._check_quorum_active():
                self._become_follower(self._term, None)
                return
            self._lead_transferee = None  # a transfer that took this long is abandoned
        if self._heartbeat_elapsed >= self._config.heartbeat_interval_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat(self._reads.last_context() or b"")

    def _check_quorum_active(self) -> bool:
        self._tracker.progress[self._id].recent_active = True
        active = self._tracker.quorum_active()
        for node_id, progress in self._tracker.progress.items():
            progress.recent_active = node_id == self._id
        return active

    # --- elections ----------------------------------------------------------------

    def _is_promotable(self) -> bool:
        return self._id in self._tracker.voters

    def campaign(self) -> None:
        """Start an election now, skipping pre-vote; no-op for non-voters."""
        self._hup(pre_vote=False, transfer=False)

    def _hup(self, *, pre_vote: bool, transfer: bool) -> None:
        if self._role is Role.LEADER or not self._is_promotable():
            return
        if self._has_unapplied_conf_change():
            return  # the membership we would campaign under may be about to change
        if pre_vote:
            self._become_pre_candidate()
        else:
            self._become_candidate()
        self._tracker.record_vote(self._id, True)
        if self._tracker.tally_votes() is VoteResult.WON:
            self._on_election_won()
            return
        vote_type = MessageType.PRE_VOTE if pre_vote else MessageType.VOTE
        term = self._term + 1 if pre_vote else self._term
        context = CAMPAIGN_TRANSFER if transfer else b""
        for voter in sorted(self._tracker.voters):
            if voter != self._id:
                self._send(
                    vote_type,
                    voter,
                    term=term,
                    index=self._log.last_index(),
                    log_term=self._log.last_term(),
                    context=context,
                )

    def _has_unapplied_conf_change(self) -> bool:
        if self._log.committed <= self._log.applied:
            return False
        try:
            pending = self._log.entries(self._log.applied + 1, self._log.committed + 1)
        except CompactedError:
            return False
        return any(entry.type is EntryType.CONF_CHANGE for entry in pending)

    def _on_election_won(self) -> None:
        if self._role is Role.PRE_CANDIDATE:
            self._hup(pre_vote=False, transfer=False)
        else:
            self._become_leader()

    # --- role transitions -----------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term < self._term:
            raise InvariantViolation(f"term going back from {self._term} to {term}")
        if term != self._term:
            self._term = term
            self._vote = None
        self._leader_id = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self._lead_transferee = None
        self._tracker.reset_votes()
        self._reads.clear()
        self._reads_waiting_commit.clear()
        self._entries_to_broadcast = False
        self._commit_to_broadcast = False
        self._read_heartbeat_pending = False

    def _reset_randomized_election_timeout(self) -> None:
        timeout = self._config.election_timeout_ticks
        self._randomized_election_timeout = self._rng.randrange(timeout, 2 * timeout)

    def _become_follower(self, term: int, leader_id: str | None) -> None:
        self._reset(term)
        self._leader_id = leader_id
        self._role = Role.FOLLOWER
        self._step_role = self._step_follower

    def _become_pre_candidate(self) -> None:
        # Pre-vote changes neither term nor vote: a partitioned node that keeps
        # failing pre-votes does not inflate its term and disrupt the leader.
        self._tracker.reset_votes()
        self._leader_id = None
        self._role = Role.PRE_CANDIDATE
        self._step_role = self._step_candidate

    def _become_candidate(self) -> None:
        self._reset(self._term + 1)
        self._vote = self._id
        self._role = Role.CANDIDATE
        self._step_role = self._step_candidate

    def _become_leader(self) -> None:
        if self._role is Role.FOLLOWER:
            raise InvariantViolation("follower cannot become leader directly")
        self._reset(self._term)
        self._leader_id = self._id
        self._role = Role.LEADER
        self._step_role = self._step_leader
        last_index = self._log.last_index()
        self._tracker.reset_progress(next_index=last_index + 1)
        own = self._tracker.progress[self._id]
        own.match = self._log.stable_last_index()
        own.become_replicate()
        own.recent_active = True
        # Conservative: a conf change may hide in the uncommitted tail.
        self._pending_conf_index = last_index
        self._uncommitted_bytes = 0
        # §5.4.2: an entry of our own term lets earlier terms' entries commit.
        self._append_entries([Entry(index=last_index + 1, term=self._term)])

    # --- proposals ----------------------------------------------------------------

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append a command; it is sent with the next ``ready()``."""
        self._check_can_propose(len(data))
        return self._append_entries([Entry(index=0, term=0, data=data)])

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        self._check_can_propose(0)
        if self._pending_conf_index > self._log.applied:
            raise ProposalDropped("a previous membership change is not applied yet")
        if not self._committed_in_current_term():
            raise ProposalDropped("the leader has not committed an entry of its term yet")
        entry = Entry(index=0, term=0, type=EntryType.CONF_CHANGE, data=encode_conf_change(cc))
        index, term = self._append_entries([entry])
        self._pending_conf_index = index
        return index, term

    def _check_can_propose(self, size_bytes: int) -> None:
        if self._role is not Role.LEADER:
            raise NotLeader(self._group_id, self._leader_id)
        if self._lead_transferee is not None:
            raise ProposalDropped(f"leadership is moving to {self._lead_transferee}")
        if (
            self._uncommitted_bytes > 0
            and self._uncommitted_bytes + size_bytes > self._config.max_uncommitted_bytes
        ):
            raise ProposalDropped("too many uncommitted bytes")

    def _append_entries(self, entries: list[Entry]) -> tuple[int, int]:
        """Leader: stamp index/term and append to the unstable log."""
        last_index = self._log.last_index()
        stamped = [
            Entry(index=last_index + 1 + offset, term=self._term, type=e.type, data=e.data)
            for offset, e in enumerate(entries)
        ]
        self._log.append(stamped)
        self._uncommitted_bytes += sum(len(e.data) for e in stamped)
        self._entries_to_broadcast = True
        return stamped[-1].index, self._term

    def _committed_in_current_term(self) -> bool:
        return self._log.term_or_zero(self._log.committed) == self._term

    # --- inbound messages -----------------------------------------------------------

    def step(self, msg: Message) -> None:
        """Handle one inbound message; bad or stale input is dropped and counted."""
        if msg.group_id != self._group_id or msg.to != self._id or msg.sender == self._id:
            self._dropped += 1
            return
        if not self._accepts_sender(msg):
            self._dropped += 1
            return
        if msg.term > self._term:
            if not self._step_higher_term(msg):
                return
        elif msg.term < self._term:
            self._step_lower_term(msg)
            return
        if msg.type in _VOTE_REQUESTS:
            self._handle_vote_request(msg)
        else:
            self._step_role(msg)

    def _accepts_sender(self, msg: Message) -> bool:
        """Non-members may not ask for votes or report to the leader; they may
        be a leader we have not learned about yet, so their APPENDs pass."""
        if not self._tracker.voters or self._tracker.is_member(msg.sender):
            return True
        return msg.type in _FROM_LEADER

    def _step_higher_term(self, msg: Message) -> bool:
        """Adopt a higher term; False when the message is to be ignored."""
        if msg.type in _VOTE_REQUESTS:
            in_lease = (
                self._config.check_quorum
                and self._leader_id is not None
                and self._election_elapsed < self._config.election_timeout_ticks
            )
            if in_lease and msg.context != CAMPAIGN_TRANSFER:
                # Leader stickiness: we heard from a live leader recently.
                return False
        if msg.type is MessageType.PRE_VOTE:
            return True  # answer it without leaving our term
        if msg.type is MessageType.PRE_VOTE_RESP and not msg.reject:
            return True  # granted at our term + 1: the tally decides
        leader = msg.sender if msg.type in _FROM_LEADER else None
        self._become_follower(msg.term, leader)
        return True

    def _step_lower_term(self, msg: Message) -> None:
        if msg.type in (MessageType.APPEND, MessageType.HEARTBEAT) and (
            self._config.check_quorum or self._config.pre_vote
        ):
            # A stale leader cut off from us: tell it our term so it steps down
            # (with pre-vote it could otherwise never learn of the new term).
            self._send(MessageType.APPEND_RESP, msg.sender)
        elif msg.type is MessageType.PRE_VOTE:
            self._send(MessageType.PRE_VOTE_RESP, msg.sender, reject=True)
        else:
            self._dropped += 1

    def _handle_vote_request(self, msg: Message) -> None:
        is_pre_vote = msg.type is MessageType.PRE_VOTE
        can_vote = (
            self._vote == msg.sender
            or (self._vote is None and self._leader_id is None)
            or (is_pre_vote and msg.term > self._term)
        )
        resp_type = MessageType.PRE_VOTE_RESP if is_pre_vote else MessageType.VOTE_RESP
        if can_vote and self._is_promotable() and self._log.is_up_to_date(msg.index, msg.log_term):
            # The grant carries the request's term so the candidate counts it.
            self._send(resp_type, msg.sender, term=msg.term)
            if not is_pre_vote:
                self._election_elapsed = 0
                self._vote = msg.sender
        else:
            self._send(resp_type, msg.sender, reject=True)

    def _step_follower(self, msg: Message) -> None:
        match msg.type:
            case MessageType.APPEND | MessageType.HEARTBEAT | MessageType.SNAPSHOT:
                self._election_elapsed = 0
                self._leader_id = msg.sender
                self._handle_from_leader(msg)
            case MessageType.TIMEOUT_NOW:
                self._hup(pre_vote=False, transfer=True)
            case MessageType.READ_INDEX_RESP:
                if not msg.reject:
                    self._read_states.append(ReadState(index=msg.index, context=msg.context))
            case _:
                self._dropped += 1

    def _step_candidate(self, msg: Message) -> None:
        expected = (
            MessageType.PRE_VOTE_RESP if self._role is Role.PRE_CANDIDATE else MessageType.VOTE_RESP
        )
        if msg.type in _FROM_LEADER:
            self._become_follower(self._term, msg.sender)
            self._handle_from_leader(msg)
        elif msg.type is expected:
            self._tracker.record_vote(msg.sender, not msg.reject)
            result = self._tracker.tally_votes()
            if result is VoteResult.WON:
                self._on_election_won()
            elif result is VoteResult.LOST:
                self._become_follower(self._term, None)
        else:
            self._dropped += 1

    def _handle_from_leader(self, msg: Message) -> None:
        if msg.type is MessageType.APPEND:
            self._handle_append(msg)
        elif msg.type is MessageType.HEARTBEAT:
            self._handle_heartbeat(msg)
        else:
            self._handle_snapshot(msg)

    def _handle_append(self, msg: Message) -> None:
        if not _is_well_formed_append(msg):
            self._dropped += 1
            return
        if msg.index < self._log.committed:
            # Stale or duplicate: everything up to our commit already matches.
            self._send(MessageType.APPEND_RESP, msg.sender, index=self._log.committed)
            return
        last_new = self._log.maybe_append(msg.index, msg.log_term, msg.commit, msg.entries)
        if last_new is not None:
            self._send(MessageType.APPEND_RESP, msg.sender, index=last_new)
            return
        # Reject with a hint: the largest index whose term is <= the leader's
        # log_term, so the leader can skip a whole conflicting term at once.
        hint_index = min(msg.index, self._log.last_index())
        hint_index = self._log.find_conflict_by_term(hint_index, msg.log_term)
        self._send(
            MessageType.APPEND_RESP,
            msg.sender,
            index=msg.index,
            reject=True,
            reject_hint=hint_index,
            log_term=self._log.term_or_zero(hint_index),
        )

    def _handle_heartbeat(self, msg: Message) -> None:
        self._log.commit_to(min(msg.commit, self._log.last_index()))
        self._send(MessageType.HEARTBEAT_RESP, msg.sender, context=msg.context)

    def _handle_snapshot(self, msg: Message) -> None:
        meta = msg.snapshot
        if meta is None or not self._snapshot_lists_us(meta):
            self._dropped += 1
            return
        if self._restore(meta):
            self._send(MessageType.APPEND_RESP, msg.sender, index=self._log.last_index())
        else:
            self._send(MessageType.APPEND_RESP, msg.sender, index=self._log.committed)

    def _snapshot_lists_us(self, meta: SnapshotMeta) -> bool:
        conf = meta.conf_state
        return self._id in conf.voters or self._id in conf.learners

    def _restore(self, meta: SnapshotMeta) -> bool:
        """Install ``meta`` unless our log already covers it."""
        if meta.index <= self._log.committed:
            return False
        if self._log.match_term(meta.index, meta.term):
            self._log.commit_to(meta.index)  # we have it: fast-forward only
            return False
        self._log.restore(meta)
        self._tracker.set_conf(meta.conf_state, next_index=self._log.last_index() + 1)
        return True

    # --- leader -------------------------------------------------------------------

    def _step_leader(self, msg: Message) -> None:
        progress = self._tracker.progress.get(msg.sender)
        if progress is None:
            self._dropped += 1
            return
        match msg.type:
            case MessageType.APPEND_RESP:
                progress.recent_active = True
                self._handle_append_response(msg, progress)
            case MessageType.HEARTBEAT_RESP:
                progress.recent_active = True
                self._handle_heartbeat_response(msg, progress)
            case MessageType.READ_INDEX:
                self._handle_read_index_request(msg)
            case _:
                self._dropped += 1

    def _handle_append_response(self, msg: Message, progress: Progress) -> None:
        if msg.reject:
            next_probe = msg.reject_hint
            if msg.log_term > 0:
                # Skip every entry of ours whose term is above the follower's
                # term at the hint: they cannot match.
                next_probe = self._log.find_conflict_by_term(msg.reject_hint, msg.log_term)
            if progress.maybe_decrease_to(msg.index, next_probe):
                if progress.state is ProgressState.REPLICATE:
                    progress.become_probe()
                self._maybe_send_append(msg.sender)
            return
        if not progress.maybe_update(msg.index) and not (
            progress.match == msg.index and progress.state is ProgressState.PROBE
        ):
            return
        if progress.state is ProgressState.PROBE:
            progress.become_replicate()
        elif progress.state is ProgressState.SNAPSHOT:
            # The follower installed a snapshot (maybe newer than ours): resume
            # from its match, through the log when it still has the next entry.
            progress.become_probe()
            if progress.match + 1 >= self._log.first_index():
                progress.become_replicate()
        else:
            progress.inflights.free_le(msg.index)
        if self._maybe_commit():
            self._commit_to_broadcast = True
        while self._maybe_send_append(msg.sender, send_if_empty=False):
            pass  # fill the inflight window for a follower that is catching up
        if msg.sender == self._lead_transferee and progress.match == self._log.last_index():
            self._send(MessageType.TIMEOUT_NOW, msg.sender)

    def _handle_heartbeat_response(self, msg: Message, progress: Progress) -> None:
        progress.probe_sent = False
        if progress.state is ProgressState.REPLICATE and progress.inflights.is_full():
            progress.inflights.free_first_one()
        if progress.match < self._log.last_index():
            # Even an empty APPEND helps: a follower whose APPENDs were lost
            # rejects it, which sends it back to probing.
            self._maybe_send_append(msg.sender)
        if not msg.context or msg.sender not in self._tracker.voters:
            return
        acks = self._reads.ack(msg.context, msg.sender)
        if acks is not None and self._tracker.has_quorum(acks):
            for read in self._reads.release_through(msg.context):
                self._answer_read(read)

    def _maybe_commit(self) -> bool:
        """§5.4.2: commit the quorum index only if it is an entry of our term."""
        index = self._tracker.committed_index()
        if index <= self._log.committed or self._log.term_or_zero(index) != self._term:
            return False
        self._log.commit_to(index)
        if self._reads_waiting_commit:
            waiting, self._reads_waiting_commit = self._reads_waiting_commit, []
            for read in waiting:
                read.index = self._log.committed
                self._start_read(read)
        return True

    def _maybe_send_append(self, to: str, *, send_if_empty: bool = True) -> bool:
        """Send ``to`` the entries it lacks (or a snapshot); False if nothing went."""
        progress = self._tracker.progress[to]
        if progress.is_paused():
            return False
        prev_index = progress.next - 1
        last_index = self._log.last_index()
        try:
            prev_term = self._log.term(prev_index)
            entries = self._log.entries(progress.next, last_index + 1, self._config.max_msg_bytes)
        except CompactedError:
            return self._maybe_send_snapshot(to, progress)
        if not entries and not send_if_empty:
            return False
        self._send(
            MessageType.APPEND,
            to,
            index=prev_index,
            log_term=prev_term,
            entries=tuple(entries),
            commit=self._log.committed,
        )
        progress.sent_entries(entries[-1].index if entries else None)
        return True

    def _maybe_send_snapshot(self, to: str, progress: Progress) -> bool:
        if not progress.recent_active:
            return False  # it may be down: do not stream a snapshot into the void
        meta = self._log.snapshot_meta()
        if meta.index == 0:
            raise InvariantViolation("log compacted but storage has no snapshot")
        self._send(MessageType.SNAPSHOT, to, snapshot=meta)
        progress.become_snapshot(meta.index)
        return True

    def _broadcast_append(self, *, send_if_empty: bool) -> None:
        for node_id in self._tracker.progress:
            if node_id != self._id and self._maybe_send_append(
                node_id, send_if_empty=send_if_empty
            ):
                # Several APPENDs when max_msg_bytes splits the batch, up to
                # the inflight window (pipelining).
                while self._maybe_send_append(node_id, send_if_empty=False):
                    pass

    def _broadcast_heartbeat(self, context: bytes) -> None:
        for node_id, progress in self._tracker.progress.items():
            if node_id != self._id:
                # Never ahead of what the follower is known to hold.
                commit = min(progress.match, self._log.committed)
                self._send(MessageType.HEARTBEAT, node_id, commit=commit, context=context)

    # --- ReadIndex ------------------------------------------------------------------

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read point; answered as a ``ReadState``."""
        if self._role is Role.LEADER:
            self._queue_read(PendingRead(index=0, context=context, requester=self._id))
        elif self._leader_id is not None and self._role is Role.FOLLOWER:
            self._send(MessageType.READ_INDEX, self._leader_id, context=context)
        else:
            raise NotLeader(self._group_id, None)

    def _handle_read_index_request(self, msg: Message) -> None:
        self._queue_read(PendingRead(index=0, context=msg.context, requester=msg.sender))

    def _queue_read(self, read: PendingRead) -> None:
        if not self._committed_in_current_term():
            # Our commit index may lag the true one until an entry of our term
            # commits (thesis §6.4 step 1): hold the read until then.
            self._reads_waiting_commit.append(read)
            return
        read.index = self._log.committed
        self._start_read(read)

    def _start_read(self, read: PendingRead) -> None:
        if self._tracker.voters == frozenset((self._id,)):
            self._answer_read(read)
            return
        read.acks.add(self._id)
        if self._reads.add(read):
            self._read_heartbeat_pending = True

    def _answer_read(self, read: PendingRead) -> None:
        if read.requester == self._id:
            self._read_states.append(ReadState(index=read.index, context=read.context))
        else:
            self._send(
                MessageType.READ_INDEX_RESP, read.requester, index=read.index, context=read.context
            )

    # --- membership -----------------------------------------------------------------

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Make a committed membership change effective (called while applying)."""
        voters = set(self._tracker.voters)
        learners = set(self._tracker.learners)
        if cc.op is ConfChangeOp.ADD_VOTER:
            learners.discard(cc.node_id)
            voters.add(cc.node_id)
        elif cc.op is ConfChangeOp.ADD_LEARNER:
            if cc.node_id not in voters:
                learners.add(cc.node_id)
        else:
            voters.discard(cc.node_id)
            learners.discard(cc.node_id)
        conf = ConfState(voters=tuple(sorted(voters)), learners=tuple(sorted(learners)))
        self._tracker.set_conf(conf, next_index=self._log.last_index() + 1)
        if self._role is not Role.LEADER:
            return conf
        if self._id not in self._tracker.voters:
            self._become_follower(self._term, None)  # removed: leave the others to elect
            return conf
        if self._lead_transferee is not None and self._lead_transferee not in voters:
            self._lead_transferee = None
        if cc.node_id != self._id and cc.op is not ConfChangeOp.REMOVE:
            self._maybe_send_append(cc.node_id)  # start probing a newcomer now
        if self._maybe_commit():  # a smaller quorum may commit more
            self._commit_to_broadcast = True
        return conf

    # --- leadership transfer --------------------------------------------------------

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to ``to``: catch it up, then send TIMEOUT_NOW."""
        if self._role is not Role.LEADER:
            raise NotLeader(self._group_id, self._leader_id)
        if to == self._id or to == self._lead_transferee:
            return
        if to not in self._tracker.voters:
            raise ProposalDropped(f"{to} is not a voter of group {self._group_id}")
        self._lead_transferee = to
        self._election_elapsed = 0  # the transfer gets one election timeout
        if self._tracker.progress[to].match == self._log.last_index():
            self._send(MessageType.TIMEOUT_NOW, to)
        else:
            self._maybe_send_append(to)

    # --- reports from the IO layer ----------------------------------------------------

    def report_unreachable(self, peer: str) -> None:
        progress = self._tracker.progress.get(peer)
        if (
            self._role is Role.LEADER
            and progress is not None
            and progress.state is ProgressState.REPLICATE
        ):
            progress.become_probe()

    def report_snapshot(self, peer: str, success: bool) -> None:
        progress = self._tracker.progress.get(peer)
        if self._role is not Role.LEADER or progress is None:
            return
        if progress.state is not ProgressState.SNAPSHOT:
            return
        if not success:
            progress.pending_snapshot = 0
        progress.become_probe()
        # Wait for the follower's answer (success) or a heartbeat round
        # (failure) before probing, instead of resending at once.
        progress.probe_sent = True

    # --- Ready / advance --------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._messages
            or self._read_states
            or self._entries_to_broadcast
            or self._commit_to_broadcast
            or self._read_heartbeat_pending
            or self._log.has_next_unstable()
            or self._log.has_next_committed()
            or self._soft_state_changed()
            or self._hard_state_changed()
        )

    def ready(self) -> Ready:
        self._flush_batched_sends()
        rd = Ready(group_id=self._group_id)
        if self._soft_state_changed():
            rd.soft_state = self._prev_soft = self._soft_state()
        if self._hard_state_changed():
            hard = self._hard_state()
            rd.must_sync = hard.term != self._prev_hard.term or hard.vote != self._prev_hard.vote
            rd.hard_state = self._prev_hard = hard
        rd.snapshot = self._log.next_unstable_snapshot()
        rd.entries = self._log.next_unstable_entries()
        if rd.entries or rd.snapshot is not None:
            rd.must_sync = True
        rd.committed_entries = self._log.next_committed_entries(_MAX_APPLY_BYTES)
        rd.messages, self._messages = self._messages, []
        rd.read_states, self._read_states = self._read_states, []
        return rd

    def _flush_batched_sends(self) -> None:
        """Leader: one APPEND per follower for everything proposed since the
        last Ready (batching), and one heartbeat round for new reads."""
        if self._role is Role.LEADER:
            if self._entries_to_broadcast or self._commit_to_broadcast:
                self._broadcast_append(send_if_empty=self._commit_to_broadcast)
            if self._read_heartbeat_pending:
                self._broadcast_heartbeat(self._reads.last_context() or b"")
        self._entries_to_broadcast = False
        self._commit_to_broadcast = False
        self._read_heartbeat_pending = False

    def advance(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self._log.stable_snapshot_to(rd.snapshot.index)
            self._log.applied_to(rd.snapshot.index)
        if rd.entries:
            last = rd.entries[-1]
            if self._log.stable_to(last.index, last.term) and self._role is Role.LEADER:
                # The leader's own copy counts toward the quorum only once durable.
                self._tracker.progress[self._id].maybe_update(last.index)
                if self._maybe_commit():
                    self._commit_to_broadcast = True
        if rd.committed_entries:
            self._log.applied_to(rd.committed_entries[-1].index)
            if self._role is Role.LEADER:
                applied_bytes = sum(len(e.data) for e in rd.committed_entries)
                self._uncommitted_bytes = max(0, self._uncommitted_bytes - applied_bytes)

    def _soft_state_changed(self) -> bool:
        # Field by field: has_ready runs for every idle group every iteration,
        # so it must not allocate.
        prev = self._prev_soft
        return prev.leader_id != self._leader_id or prev.role is not self._role

    def _hard_state_changed(self) -> bool:
        prev = self._prev_hard
        return (
            prev.term != self._term or prev.vote != self._vote or prev.commit != self._log.committed
        )

    def _soft_state(self) -> SoftState:
        return SoftState(leader_id=self._leader_id, role=self._role)

    def _hard_state(self) -> HardState:
        return HardState(term=self._term, vote=self._vote, commit=self._log.committed)

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


def _is_well_formed_append(msg: Message) -> bool:
    """Entries follow ``msg.index`` one by one, with terms never going back
    and never above the sender's term."""
    expected_index = msg.index + 1
    previous_term = msg.log_term
    if msg.index < 0 or previous_term > msg.term:
        return False
    for entry in msg.entries:
        if entry.index != expected_index or not previous_term <= entry.term <= msg.term:
            return False
        expected_index += 1
        previous_term = entry.term
    return True


def decode_conf_change_entry(entry: Entry) -> ConfChange:
    """The ConfChange carried by a CONF_CHANGE entry (for the IO layer)."""
    if entry.type is not EntryType.CONF_CHANGE:
        raise InvariantViolation(f"entry {entry.index} is not a conf change")
    return decode_conf_change(entry.data)
