"""What a leader knows about each member's log, and quorum arithmetic.

``Progress`` is one follower's replication state (PROBE / REPLICATE /
SNAPSHOT) with its inflight window; ``ProgressTracker`` holds the membership,
the per-member progress, election votes, and answers quorum questions over the
*voters only* (learners never count). No IO, no messages: ``core.py`` decides
what to send from what this module says.
"""

from __future__ import annotations

import enum
from collections import deque

from fastpaca.raft.messages import ConfChange, ConfChangeOp, ConfState

__all__ = [
    "Inflights",
    "Progress",
    "ProgressState",
    "ProgressTracker",
    "VoteResult",
    "changed_conf",
]


def changed_conf(conf: ConfState, cc: ConfChange) -> ConfState:
    """``conf`` after the single-server change ``cc`` (idempotent: adding a
    member twice or removing a stranger changes nothing)."""
    voters = set(conf.voters)
    learners = set(conf.learners)
    if cc.op is ConfChangeOp.ADD_VOTER:
        learners.discard(cc.node_id)  # promotion
        voters.add(cc.node_id)
    elif cc.op is ConfChangeOp.ADD_LEARNER:
        if cc.node_id not in voters:  # never a demotion
            learners.add(cc.node_id)
    else:
        voters.discard(cc.node_id)
        learners.discard(cc.node_id)
    return ConfState(voters=tuple(sorted(voters)), learners=tuple(sorted(learners)))


class ProgressState(enum.Enum):
    PROBE = "probe"
    """Next index unknown: send one APPEND, wait for its answer."""
    REPLICATE = "replicate"
    """Follower is in sync: stream APPENDs optimistically within the window."""
    SNAPSHOT = "snapshot"
    """A snapshot is on its way: send nothing until it is reported."""


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


class Inflights:
    """The last indexes of APPENDs sent but not yet acknowledged (flow control)."""

    __slots__ = ("_capacity", "_last_indexes")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._last_indexes: deque[int] = deque()

    def add(self, last_index: int) -> None:
        self._last_indexes.append(last_index)

    def free_le(self, index: int) -> None:
        """Forget every APPEND whose last index is <= ``index`` (acknowledged)."""
        while self._last_indexes and self._last_indexes[0] <= index:
            self._last_indexes.popleft()

    def free_first_one(self) -> None:
        if self._last_indexes:
            self._last_indexes.popleft()

    def is_full(self) -> bool:
        return len(self._last_indexes) >= self._capacity

    def count(self) -> int:
        return len(self._last_indexes)

    def reset(self) -> None:
        self._last_indexes.clear()


class Progress:
    """One member's replication progress, as seen by the leader."""

    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "state",
    )

    def __init__(self, *, next_index: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.probe_sent = False
        """In PROBE: an APPEND is out, wait for its answer (or a heartbeat's)."""
        self.recent_active = False
        """Heard from within the current election timeout (check-quorum)."""
        self.inflights = Inflights(max_inflight)
        self.is_learner = is_learner

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            # The snapshot (if it got there) covers pending_snapshot: probe after it.
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self._reset_state(ProgressState.PROBE)

    def become_replicate(self) -> None:
        self.next = self.match + 1
        self._reset_state(ProgressState.REPLICATE)

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def _reset_state(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to ``index``; False when it was stale."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def sent_entries(self, last_index: int | None) -> None:
        """Record an APPEND just sent (``last_index`` None: it was empty)."""
        if self.state is ProgressState.REPLICATE:
            if last_index is not None:
                self.next = last_index + 1
                self.inflights.add(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the APPEND at ``rejected``; False when stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # not the probe we are waiting for
        if rejected <= self.match:
            # It lacks an entry it acknowledged: its replica was re-created
            # empty since (removed, deleted, added back; an answer of its
            # old incarnation set the match), or this answer is very late.
            # Keeping the match would probe the same index for ever; a
            # success after the new probe moves the match up again.
            self.match = 0
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.is_full()
        return True


class ProgressTracker:
    """Membership, per-member progress and votes of one group."""

    def __init__(self, conf_state: ConfState, *, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.voters: frozenset[str] = frozenset(conf_state.voters)
        self.learners: frozenset[str] = frozenset(conf_state.learners)
        self.progress: dict[str, Progress] = {}
        self.votes: dict[str, bool] = {}
        self.reset_progress(next_index=1)

    @property
    def conf_state(self) -> ConfState:
        return ConfState(voters=tuple(sorted(self.voters)), learners=tuple(sorted(self.learners)))

    def set_conf(self, conf_state: ConfState, *, next_index: int) -> None:
        """Switch membership, keeping the progress of members that stay."""
        self.voters = frozenset(conf_state.voters)
        self.learners = frozenset(conf_state.learners)
        members = self.voters | self.learners
        for node_id in list(self.progress):
            if node_id not in members:
                del self.progress[node_id]
        for node_id in members:
            progress = self.progress.get(node_id)
            if progress is None:
                progress = Progress(next_index=next_index, max_inflight=self.max_inflight)
                progress.recent_active = True  # give a newcomer one timeout to answer
                self.progress[node_id] = progress
            progress.is_learner = node_id in self.learners
        # Sorted, so messages go out in the same order in every process (set
        # order of strings depends on the per-process hash seed).
        self.progress = {node_id: self.progress[node_id] for node_id in sorted(self.progress)}

    def reset_progress(self, *, next_index: int) -> None:
        self.progress = {
            node_id: Progress(
                next_index=next_index,
                max_inflight=self.max_inflight,
                is_learner=node_id in self.learners,
            )
            for node_id in sorted(self.voters | self.learners)
        }

    def is_member(self, node_id: str) -> bool:
        return node_id in self.voters or node_id in self.learners

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def committed_index(self) -> int:
        """The highest index a quorum of voters has (0 with no voters).
        Runs once per group and write on a leader, so the common sizes skip
        the sort: one voter is its own quorum, three take the median."""
        voters, progress = self.voters, self.progress
        if len(voters) == 1:
            for only in voters:
                return progress[only].match
        if len(voters) == 3:
            a, b, c = [progress[v].match for v in voters]
            return max(min(a, b), min(max(a, b), c))
        if not voters:
            return 0
        matches = sorted([progress[v].match for v in voters], reverse=True)
        return matches[self.quorum() - 1]

    def has_quorum(self, acks: set[str] | dict[str, bool]) -> bool:
        return sum(1 for voter in self.voters if voter in acks) >= self.quorum()

    def quorum_active(self) -> bool:
        active = sum(1 for voter in self.voters if self.progress[voter].recent_active)
        return active >= self.quorum()

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node_id: str, granted: bool) -> None:
        if node_id in self.voters and node_id not in self.votes:
            self.votes[node_id] = granted

    def tally_votes(self) -> VoteResult:
        granted = sum(1 for vote in self.votes.values() if vote)
        rejected = len(self.votes) - granted
        if granted >= self.quorum():
            return VoteResult.WON
        if rejected > len(self.voters) - self.quorum():
            return VoteResult.LOST
        return VoteResult.PENDING
