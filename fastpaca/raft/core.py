"""RaftNode: the IO-free Raft state machine of one group.

This module owns the public face of a group's Raft: construction from
storage, ``tick``/``step``/``propose``/... in, ``Ready`` out (see
``ready.py`` for the persist → send → apply → advance contract), plus
membership, leadership transfer and the IO layer's reports. The protocol
itself lives in parts mixed into ``RaftNode``: ``election.py``,
``replication.py`` and ``readindex.py`` (shared fields: ``node_state.py``).

Must not do IO, read a clock or use global randomness: time is ticks and the
election jitter comes from the injected ``random.Random``. Bad or stale input
is dropped and counted, never raised; broken invariants raise
``InvariantViolation``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fastpaca.errors import InvariantViolation, NotLeader, ProposalDropped
from fastpaca.raft.codec import decode_conf_change, encode_conf_change
from fastpaca.raft.election import ElectionMixin
from fastpaca.raft.log import RaftLog
from fastpaca.raft.messages import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
)
from fastpaca.raft.node_state import CAMPAIGN_TRANSFER, FROM_LEADER, VOTE_REQUESTS, RaftConfig
from fastpaca.raft.progress import Progress, ProgressState, ProgressTracker, changed_conf
from fastpaca.raft.readindex import ReadIndexMixin, ReadIndexQueue
from fastpaca.raft.ready import Ready, Role, SoftState
from fastpaca.raft.replication import ReplicationMixin
from fastpaca.raft.storage import LogStorage

if TYPE_CHECKING:
    import random

__all__ = ["CAMPAIGN_TRANSFER", "RaftConfig", "RaftNode", "decode_conf_change_entry"]

_MAX_APPLY_BYTES = 4 << 20
"""Data handed out to apply per Ready: bounds one driver iteration's work."""

_LEADER = Role.LEADER
"""Looking up an enum member allocates on Python 3.11; ``tick`` runs for every
idle group on every tick, so it compares against this module constant."""


class RaftNode(ElectionMixin, ReplicationMixin, ReadIndexMixin):
    """One group's Raft state machine; see the module docstring."""

    def __init__(self, config: RaftConfig, storage: LogStorage, rng: random.Random) -> None:
        if config.election_timeout_ticks <= config.heartbeat_interval_ticks:
            raise ValueError("election timeout must exceed the heartbeat interval")
        self._config = config
        self._id = config.node_id
        self._only_me = frozenset((self._id,))
        self._group_id = config.group_id
        self._rng = rng
        hard_state, conf_state = storage.initial_state()
        self._log = RaftLog(storage, committed=hard_state.commit, applied=config.applied_index)
        self._tracker = ProgressTracker(conf_state, max_inflight=config.max_inflight_msgs)
        self._term = hard_state.term
        self._vote = hard_state.vote
        self._leader_id = None
        self._role = Role.FOLLOWER
        self._step_role = self._step_follower
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._ticks = 0
        self._randomized_election_timeout = config.election_timeout_ticks
        self._messages = []
        self._read_states = []
        self._reads = ReadIndexQueue()
        self._reads_waiting_commit = []
        self._lead_transferee = None
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

    def is_only_voter(self) -> bool:
        """No other node can lead the group or count toward its quorum
        (learners, if any, still replicate from it)."""
        return self._tracker.voters == self._only_me

    def is_only_member(self) -> bool:
        """This node is the group's only voter and the group has no learner:
        nobody replicates from it and no other node can lead the group."""
        return self.is_only_voter() and not self._tracker.learners

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

    def tick(self) -> bool:
        """Advance time by one tick. True when the tick gave ``ready()``
        something to hand out (messages or a role change): the host visits
        only those groups, so an idle tick costs one call per group."""
        outbox, role = len(self._messages), self._role
        self._ticks += 1
        if role is _LEADER and self.is_only_member():
            # It leads for good: it has nobody to send a heartbeat to, and
            # its quorum (itself) is always active. Every group of a node
            # alone, on every tick.
            return False
        if role is _LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()
        return len(self._messages) != outbox or self._role is not role

    # --- proposals ----------------------------------------------------------------

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append a command; it is sent with the next ``ready()``."""
        self._check_can_propose(len(data))
        return self._append_entries([Entry(index=0, term=0, data=data)])

    def propose_many(self, commands: Sequence[bytes]) -> tuple[int, int]:
        """Append several commands at once, all or none: (index of the first,
        term); the rest follow one index apart. The driver's hot path: one
        check and one append for everything proposed to a group in a loop
        pass, instead of one each."""
        size_bytes = sum(map(len, commands))
        self._check_can_propose(size_bytes)
        first, term = self._log.last_index() + 1, self._term
        self._log.append(
            [
                Entry(index=index, term=term, data=data)
                for index, data in enumerate(commands, start=first)
            ]
        )
        self._uncommitted_bytes += size_bytes
        self._entries_to_broadcast = True
        return first, term

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
        if msg.type in VOTE_REQUESTS:
            self._handle_vote_request(msg)
        else:
            self._step_role(msg)

    def _accepts_sender(self, msg: Message) -> bool:
        """Messages from non-members are dropped, except a leader's (one we
        have not learned about yet) and vote requests while our membership
        may be stale: the candidate may have been added by a change we have
        not applied, or not even received (its log is ahead of ours).
        Refusing it then could leave the group with no possible quorum: a
        voter far behind, still under a membership without the candidate,
        would ignore the only candidate able to catch it up. A candidate
        whose log is not ahead of ours cannot know a newer membership."""
        if not self._tracker.voters or self._tracker.is_member(msg.sender):
            return True
        if msg.type in FROM_LEADER:
            return True
        return msg.type in VOTE_REQUESTS and (
            self._log.is_up_to_date(msg.index, msg.log_term, strictly=True)
            or self._has_unapplied_conf_change(through_last=True)
        )

    # --- membership, transfer, reports from the IO layer -------------------------------

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Make a committed membership change effective (called while applying)."""
        is_newcomer = not self._tracker.is_member(cc.node_id)
        conf = changed_conf(self._tracker.conf_state, cc)
        self._tracker.set_conf(conf, next_index=self._log.last_index() + 1)
        if self._role is not Role.LEADER:
            return conf
        if self._id not in self._tracker.voters:
            self._become_follower(self._term, None)  # removed: leave the others to elect
            return conf
        if self._lead_transferee is not None and self._lead_transferee not in conf.voters:
            self._lead_transferee = None
        if is_newcomer and self._tracker.is_member(cc.node_id):
            self._maybe_send_append(cc.node_id)  # start probing it now, not at the next heartbeat
        if self._maybe_commit():  # a smaller quorum may commit more
            self._commit_to_broadcast = True
        return conf

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
        return bool(self._messages) or self._has_work_besides_messages()

    def _has_work_besides_messages(self) -> bool:
        """Anything a Ready would hold other than outbound messages: state
        to persist, entries to apply, sends to build, reads or role changes."""
        return bool(
            self._read_states
            or self._entries_to_broadcast
            or self._commit_to_broadcast
            or self._read_heartbeat_pending
            or self._log.has_next_unstable()
            or self._log.has_next_committed()
            or self._soft_state_changed()
            or self._hard_state_changed()
        )

    def take_messages_if_only(self) -> list[Message] | None:
        """The outbox, when messages are all a Ready would hold (nothing to
        persist, apply, broadcast or report): the same as ``ready()`` then
        ``advance()`` of that Ready, which would be a no-op, minus building
        it. None otherwise (then use ``has_ready``/``ready``). The idle path:
        heartbeats and their answers take it."""
        if not self._messages or self._has_work_besides_messages():
            return None
        messages, self._messages = self._messages, []
        return messages

    def ready(self) -> Ready:
        self._flush_batched_sends()
        rd = Ready(group_id=self._group_id)
        rd.snapshot = self._log.next_unstable_snapshot()
        rd.entries = self._log.next_unstable_entries()
        if rd.entries and self._role is _LEADER and self.is_only_voter():
            self._commit_with_own_write(rd.entries[-1])
        if self._soft_state_changed():
            rd.soft_state = self._prev_soft = self._soft_state()
        if self._hard_state_changed():
            hard = self._hard_state()
            rd.must_sync = hard.term != self._prev_hard.term or hard.vote != self._prev_hard.vote
            rd.hard_state = self._prev_hard = hard
        if rd.entries or rd.snapshot is not None:
            rd.must_sync = True
        rd.committed_entries = self._log.next_committed_entries(_MAX_APPLY_BYTES)
        rd.messages, self._messages = self._messages, []
        rd.read_states, self._read_states = self._read_states, []
        return rd

    def ready_alone(self) -> tuple[list[Entry], HardState] | None:
        """The only voter's shortcut around ``ready``/``advance`` for the one
        kind of Ready such a group has while it takes appends: new entries
        of this term, which commit in the write that persists them (see
        ``_commit_with_own_write``) and are applied in that same write, plus
        the commit-only hard state to store. Returns (entries, hard state),
        with the entries handed out both to persist and to apply; the caller
        does both in one batch, then calls ``advance_alone`` once it is
        durable. None, changing nothing, whenever a Ready would hold anything
        else (messages, reads, a role or term change, a snapshot, older
        committed entries): then ``ready`` as usual. It does per append what
        ``ready`` plus ``advance`` do, in a fraction of the calls: on a node
        alone, that pair was about a third of the engine's work."""
        if (
            self._role is not _LEADER
            or self._messages
            or self._read_states
            or self._read_heartbeat_pending
            or self._reads_waiting_commit
            or not self.is_only_member()
            or self._soft_state_changed()
            or self._prev_hard.term != self._term
            or self._prev_hard.vote != self._vote
        ):
            return None
        entries = self._log.take_entries_after_commit()
        if not entries:
            return None
        last = entries[-1]
        self._commit_with_own_write(last)
        if self._log.committed != last.index:
            raise InvariantViolation(
                f"group {self._group_id}: lone voter's entry {last.index} did not commit"
            )
        self._log.applying = last.index
        self._entries_to_broadcast = self._commit_to_broadcast = False  # nobody to send to
        hard = self._prev_hard = HardState(term=self._term, vote=self._vote, commit=last.index)
        return entries, hard

    def read_index_alone(self) -> int | None:
        """What ``read_index`` would answer, at once and with no Ready, for a
        leader that is its group's only voter and has committed an entry of
        its term: the commit index. None for any other node (then use
        ``read_index``). No other node can lead such a group, so no round
        of heartbeats is needed to confirm the leadership."""
        if self._role is _LEADER and self.is_only_voter() and self._committed_in_current_term():
            return self._log.committed
        return None

    def advance_alone(self, last: Entry) -> None:
        """``advance`` for ``ready_alone``: its entries, up to ``last``, are
        durable and applied."""
        if not self._log.stable_to(last.index, last.term):
            raise InvariantViolation(f"group {self._group_id}: entry {last.index} not stable")
        self._log.applied_to(last.index)
        self._uncommitted_bytes = 0  # all of the log is committed

    def _commit_with_own_write(self, last: Entry) -> None:
        """Leader and only voter: the write that makes ``last`` durable is the
        whole quorum, so it commits there. Counting the leader's own copy
        before it is durable is safe only because the IO layer writes the
        entries, their apply and the commit index in one atomic batch and
        releases no result or effect before that write: either all of it
        survives a crash or none of it, and nobody learned of it. It saves
        the second Ready (and write) per group that applying after the
        write would cost, i.e. about half the work of a node alone."""
        self._tracker.progress[self._id].maybe_update(last.index)
        self._maybe_commit()

    def _flush_batched_sends(self) -> None:
        """Leader: one APPEND per follower for everything proposed since the
        last Ready (batching), and one heartbeat round for new reads."""
        if self._role is Role.LEADER:
            if self._entries_to_broadcast or self._commit_to_broadcast:
                self._broadcast_append(
                    send_if_empty=self._commit_to_broadcast and self._commit_needs_notice()
                )
            if self._read_heartbeat_pending:
                self._broadcast_heartbeat(self._reads.last_context() or b"")
        self._entries_to_broadcast = False
        self._commit_to_broadcast = False
        self._read_heartbeat_pending = False

    def _commit_needs_notice(self) -> bool:
        """Whether a moved commit index goes to followers now, in an empty
        APPEND, rather than with the next APPEND or heartbeat
        (``RaftConfig.prompt_commit_notice``). A membership change committed
        and not yet applied here always goes now."""
        return self._config.prompt_commit_notice or (
            self._log.applied < self._pending_conf_index <= self._log.committed
        )

    def advance(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self._log.stable_snapshot_to(rd.snapshot.index)
            self._log.applied_to(rd.snapshot.index)
        if rd.entries:
            last = rd.entries[-1]
            # The leader's own copy counts toward the quorum only once durable
            # (the only voter's did already, in ``ready``: then nothing moves).
            if (
                self._log.stable_to(last.index, last.term)
                and self._role is Role.LEADER
                and self._tracker.progress[self._id].maybe_update(last.index)
                and self._maybe_commit()
            ):
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


def decode_conf_change_entry(entry: Entry) -> ConfChange:
    """The ConfChange carried by a CONF_CHANGE entry (for the IO layer)."""
    if entry.type is not EntryType.CONF_CHANGE:
        raise InvariantViolation(f"entry {entry.index} is not a conf change")
    return decode_conf_change(entry.data)
