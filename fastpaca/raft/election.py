"""Elections: terms, votes, pre-vote, leader stickiness and role changes.

The part of ``RaftNode`` that decides who leads: election timeouts,
campaigns (with or without pre-vote, or forced by TIMEOUT_NOW), answering
vote requests under the §5.4.1 up-to-date rule, what a message from another
term does to us, and the ``_become_*`` transitions. It sends through the
shared outbox and does no IO.

Fast failover (``leader_unreachable``). When the IO layer sees the
connection to our leader drop, that leader's process is most likely gone
(a killed process's TCP connections close at once), and waiting a whole
election timeout only adds to the outage. The follower then forgets the
leader, so its leader stickiness no longer refuses the other survivors'
pre-votes, and brings its election timer forward to a few ticks. This only
changes *when* a campaign starts, which Raft leaves to timing anyway: it
still goes through pre-vote, which needs a quorum of voters that are not
hearing from a leader themselves, and votes are still one per term. So if
the leader is in fact alive (only this link blipped), the other followers'
stickiness refuses the pre-vote, the leader never sees a higher term, and
this node rejoins it when its heartbeats come through again.

Survivors must not all campaign on the same tick: two pre-candidates grant
each other's pre-vote, both become candidates, split the vote and wait a
full election timeout. So the delay is staggered by a rank: the remaining
voters ordered by a stable hash of (group, node id), identical on every
replica and different from group to group (the new leaderships spread over
the survivors), rank ``r`` waiting ``1 + r * stagger`` ticks plus a random
jitter smaller than the stagger. The next-ranked takes over only when the
first-ranked cannot win (its log is behind, or it is gone too).
"""

from __future__ import annotations

import hashlib

from fastpaca.errors import InvariantViolation
from fastpaca.raft.messages import Entry, EntryType, Message, MessageType
from fastpaca.raft.node_state import CAMPAIGN_TRANSFER, FROM_LEADER, VOTE_REQUESTS, NodeState
from fastpaca.raft.progress import VoteResult
from fastpaca.raft.ready import Role
from fastpaca.raft.storage import CompactedError

__all__ = ["ElectionMixin"]

_SCAN_BYTES = 1 << 20
"""Read the log in chunks of this much data when looking for conf changes."""


def _rank_score(group_id: int, node_id: str) -> bytes:
    """A voter's place in the fast-election order of ``group_id``: the same
    on every replica (BLAKE2b, not the salted ``hash()``), and shuffled from
    group to group (CRC32, being linear, would order two ids alike in
    every group)."""
    key = f"{group_id}\x00{node_id}".encode()
    return hashlib.blake2b(key, digest_size=8, person=b"fast-election").digest()


class ElectionMixin(NodeState):
    def _tick_election(self) -> None:
        # The idle path of every follower: one increment and one compare.
        self._election_elapsed += 1
        if self._election_elapsed >= self._randomized_election_timeout and self._is_promotable():
            self._election_elapsed = 0
            self._hup(pre_vote=self._config.pre_vote, transfer=False)

    def campaign(self) -> None:
        """Start an election now, skipping pre-vote; no-op for non-voters."""
        self._hup(pre_vote=False, transfer=False)

    def leader_unreachable(self, peer: str) -> None:
        """The IO layer lost its connection to ``peer``. When ``peer`` is the
        leader we follow: forget it, and (as a voter) start a pre-vote
        campaign within a few ticks instead of a whole election timeout (see
        the module docstring). Anything else (we lead, we campaign already,
        ``peer`` is someone else) is left alone."""
        if self._role is not Role.FOLLOWER or self._leader_id is None:
            return
        if self._leader_id != peer:
            return
        self._leader_id = None
        if not self._is_promotable():
            return
        delay = self._fast_election_delay(peer)
        remaining = self._randomized_election_timeout - self._election_elapsed
        if delay < remaining:
            self._election_elapsed = self._randomized_election_timeout - delay

    def _fast_election_delay(self, lost_leader: str) -> int:
        """Ticks until this voter campaigns after losing ``lost_leader``."""
        stagger = max(1, self._config.election_timeout_ticks // 4)
        group = self._group_id
        ranked = sorted(
            (voter for voter in self._tracker.voters if voter != lost_leader),
            key=lambda voter: (_rank_score(group, voter), voter),
        )
        rank = ranked.index(self._id)
        return 1 + rank * stagger + self._rng.randrange(max(1, stagger // 2))

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

    def _has_unapplied_conf_change(self, *, through_last: bool = False) -> bool:
        """Whether a conf change waits in (applied, commit] (or, with
        ``through_last``, anywhere after applied). Reads the log: only
        called when an election starts or a non-member asks for a vote."""
        hi = (self._log.last_index() if through_last else self._log.committed) + 1
        lo = self._log.applied + 1
        try:
            while lo < hi:
                chunk = self._log.entries(lo, hi, _SCAN_BYTES)
                if any(entry.type is EntryType.CONF_CHANGE for entry in chunk):
                    return True
                lo = chunk[-1].index + 1
        except CompactedError:
            return False
        return False

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
        # In phase with the tick count, not with this election: the leaders of
        # a host (ticked together) then beat on the same ticks, and their
        # heartbeats share one frame per peer instead of one frame per tick.
        self._heartbeat_elapsed = self._ticks % self._config.heartbeat_interval_ticks
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

    # --- messages from other terms, vote requests and answers ---------------------------

    def _step_higher_term(self, msg: Message) -> bool:
        """Adopt a higher term; False when the message is to be ignored."""
        if msg.type in VOTE_REQUESTS:
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
        leader = msg.sender if msg.type in FROM_LEADER else None
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
        # A learner answers too (as etcd's does): the candidate may know of a
        # committed change promoting it that it has not applied yet, and the
        # group can need its vote to elect anyone. A candidate counts only
        # votes of its own voters, so a learner never counts toward a quorum.
        # A replica created empty to join (no log, no membership: a new
        # learner, or one re-created after its data was deleted) knows nothing
        # of what was committed, so its vote could elect a candidate missing
        # committed entries (Raft assumes a voter never forgets:
        # tests/sim/FINDINGS.md #2). It grants nothing until a leader has given
        # it a log or a snapshot. Bootstrapped members start with a membership.
        tracker = self._tracker
        has_state = self._log.last_index() > 0 or bool(tracker.voters or tracker.learners)
        if can_vote and has_state and self._log.is_up_to_date(msg.index, msg.log_term):
            # The grant carries the request's term so the candidate counts it.
            self._send(resp_type, msg.sender, term=msg.term)
            if not is_pre_vote:
                self._election_elapsed = 0
                self._vote = msg.sender
        else:
            self._send(resp_type, msg.sender, reject=True)

    def _step_candidate(self, msg: Message) -> None:
        expected = (
            MessageType.PRE_VOTE_RESP if self._role is Role.PRE_CANDIDATE else MessageType.VOTE_RESP
        )
        if msg.type in FROM_LEADER:
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
